"""The shape of the code, checked: no import cycles (imports inside functions count), torch only
where tensors are, short functions, and one contract for every law form."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scalelab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):  # every import, at any depth
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[mod] |= {n for n in names if n in files and n != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_scalelab_modules():
    graph = _import_graph()
    assert len(graph) > 60 and sum(map(len, graph.values())) > 100  # the walk really saw the code
    assert "scalelab.train.loop" in graph["scalelab.cli.run"]  # an import inside a function counts
    # a package and its own modules (scalelab.cli -> scalelab.cli.run) are not a cycle to break
    cycles = [c for c in _cycles(graph) if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


TORCH_FREE = ["scalelab.io", "scalelab.typed", "scalelab.config", "scalelab.train.rundir", "scalelab.train.records",
              "scalelab.train.hooks", "scalelab.ladder.plan", "scalelab.ladder.store", "scalelab.ladder.results",
              "scalelab.laws.fitting", "scalelab.laws.selection", "scalelab.laws.published",
              "scalelab.economics.footprint", "scalelab.economics.planning", "scalelab.report.data",
              "scalelab.report.page", "scalelab.model.hf", "scalelab.cli"]


def test_torch_only_where_tensors_are(tmp_path):
    code = ("import sys, importlib\n"
            f"for m in {TORCH_FREE!r}: importlib.import_module(m)\n"
            "from scalelab.laws.published import get_law\n"
            f"get_law('besiroglu2024').save({str(tmp_path / 'fit.json')!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_lazy_imports_of_scalelab_only_at_the_cli_boundary():
    """Inside the library every scalelab import is at module top (the import graph is what it looks
    like); only scalelab/cli imports lazily, so `scalelab --help` and the economics commands stay
    fast and torch-free."""
    lazy = []
    for path in SRC.rglob("*.py"):
        if "cli" in path.relative_to(SRC).parts:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy += [f"{path.relative_to(SRC)}:{n.lineno}" for n in ast.walk(fn)
                         if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("scalelab")
                         or isinstance(n, ast.Import) and any(a.name.startswith("scalelab") for a in n.names)]
    assert lazy == []


def test_functions_stay_short():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


# ---- one contract for every law form (scikit-learn's check_estimator, for forms) ------------------

def _fittable_forms():
    from scalelab.laws.forms import FORMS

    return [f for f in FORMS.values() if f.theta_names]


@pytest.mark.parametrize("form", _fittable_forms(), ids=lambda f: f.name)
def test_law_form_contract(form):
    rng = np.random.default_rng(0)
    grid = form.grid()
    assert grid.ndim == 2 and grid.shape[1] == len(form.theta_names)  # grid width = theta length
    if form.bounds() is not None:
        assert len(form.bounds()) == len(form.theta_names)
    N, D = np.geomspace(1e6, 1e10, 7), np.geomspace(1e8, 1e12, 7)[::-1]
    F = form.features(N, D)
    for theta in grid[rng.choice(len(grid), 5, replace=False)] + rng.normal(0, 0.05, (5, grid.shape[1])):
        theta = np.maximum(theta, 0.01) if form.bounds() else theta
        # to_params / to_theta round trip, and every published parameter name present
        params = form.to_params(theta)
        assert set(params) == set(form.param_names)
        np.testing.assert_allclose(form.to_theta(params), theta, rtol=1e-12, atol=1e-12)
        # the hand-written Jacobian against central finite differences
        pred, jac = form.log_predict(theta, F)
        assert pred.shape == (len(N),) and jac.shape == (len(N), len(theta))
        h = 1e-6
        fd = np.stack([(form.log_predict(theta + h * e, F)[0] - form.log_predict(theta - h * e, F)[0]) / (2 * h)
                       for e in np.eye(len(theta))], axis=-1)
        np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-7)
        # predict is exp of the log prediction, through the public parameters
        np.testing.assert_allclose(form.predict(params, N, D), np.exp(pred), rtol=1e-10)


# Data files the package may carry: its own (the demo ladder it trained, the registry of public files it
# fetches) and the shape keys of published model configs (`count`'s zoo; no weights, no data).
OWN_DATA = {"examples/scalelab_demo_2026-11-29.csv", "datasets/files.csv"}
DATA_SUFFIXES = {".csv", ".tsv", ".parquet", ".jsonl", ".xlsx", ".pkl", ".npz", ".npy", ".txt"}


def test_the_package_ships_no_third_party_data_and_never_reads_shared():
    """Public data is fetched from its pinned source (scalelab.datasets); ../shared is for tests alone."""
    data = {str(p.relative_to(SRC)) for p in SRC.rglob("*") if p.suffix in DATA_SUFFIXES}
    assert data == OWN_DATA, sorted(data - OWN_DATA)
    readers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "shared/" in p.read_text()]
    assert readers == [], readers
