"""`scalelab data list|fetch|path`: the public datasets scalelab builds its back-tests from."""

from __future__ import annotations

from scalelab.cli.output import emit, table


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def cmd_list(a) -> int:
    from scalelab import datasets

    rows = []
    for name, ds in datasets.DATASETS.items():
        st = datasets.status(name)
        rows.append({"name": name, "table": ds.table, "about": ds.about, "files": st.files,
                     "size_bytes": st.size_bytes, "cached": st.cached, "built": st.built,
                     "source": f"{ds.source.repo}@{ds.source.commit[:7]}", "url": ds.source.url,
                     "licence": ds.source.licence, "citation": ds.citation})

    def render(rows):
        table("Public datasets (fetched on first use from their pinned source; `scalelab data fetch all` "
              "fetches every one)", ["dataset", "size", "cached", "source", "licence", "cite"],
              [(r["name"] + "\n" + r["about"], f"{_size(r['size_bytes'])}\n{r['files']} file(s)",
                "yes" if r["cached"] else "no", r["source"], r["licence"], r["citation"]) for r in rows],
              right=("size",))
        from scalelab.datasets.download import cache_dir

        print(f"cache: {cache_dir()}")

    emit(rows, a.json, render)
    return 0


def cmd_fetch(a) -> int:
    from scalelab import datasets

    names = list(datasets.DATASETS) if a.name == "all" else [datasets.get(a.name).name]
    for name in names:
        path = datasets.table_path(name)
        print(f"{name}: {path}")
    return 0


def cmd_path(a) -> int:
    from scalelab import datasets
    from scalelab.datasets.download import raw_path

    ds = datasets.get(a.name)
    if a.raw:
        datasets.fetch(a.name)
        print(raw_path(f"{ds.source.repo}/{ds.source.commit}"))
    else:
        print(datasets.table_path(a.name))
    return 0


def register(sub) -> None:
    d = sub.add_parser("data", help="public datasets: list, fetch, find (downloaded on first use, verified, cached)",
                       description="scalelab ships no third-party data. Each public dataset is built on first use "
                                   "from its source files at a pinned commit, downloaded from GitHub (or copied "
                                   "from a local mirror: scalelab --data-dir DIR, or $SCALELAB_DATA_DIR), checked "
                                   "against its sha256 and cached under $SCALELAB_CACHE/public.")
    s = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    ls = s.add_parser("list", help="each dataset's size, licence, citation and whether it is cached")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)
    f = s.add_parser("fetch", help="download, verify and build a dataset's table (or all)")
    f.add_argument("name", metavar="NAME", help="a dataset from `scalelab data list`, or all")
    f.set_defaults(fn=cmd_fetch)
    p = s.add_parser("path", help="print where a dataset's tidy table is cached (fetching it first if needed)")
    p.add_argument("name", metavar="NAME", help="a dataset from `scalelab data list`")
    p.add_argument("--raw", action="store_true", help="the folder of its raw files instead")
    p.set_defaults(fn=cmd_path)
