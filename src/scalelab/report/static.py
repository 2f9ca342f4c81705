"""Static figures (PNG and SVG) for papers and slides, drawn with matplotlib from the same data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scalelab.laws.published import PUBLISHED  # noqa: E402
from scalelab.report.data import ReportData, interval, optimal_path, published_points  # noqa: E402


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=150, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def write_static(d: ReportData, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted(d.finals["budget"].unique())
    cmap = plt.get_cmap("tab10")
    written = []
    N, D, L = (d.finals[k].to_numpy(float) for k in ("N", "D", "loss"))

    # 1. landscape
    if d.law is not None:
        fig = plt.figure(figsize=(8, 6))
        # drawn in call order (surface first), so runs and lines stay visible rather than tinted by
        # whichever surface facets matplotlib's painter's sort puts in front of them
        ax = fig.add_subplot(projection="3d", computed_zorder=False)
        x = np.linspace(np.log10(N.min()) - 0.3, np.log10(N.max()) + 0.5, 40)
        y = np.linspace(np.log10(D.min()) - 0.3, np.log10(D.max()) + 0.5, 40)
        X, Y = np.meshgrid(x, y)
        ax.plot_surface(X, Y, d.law.predict(10 ** X, 10 ** Y), cmap="viridis", alpha=0.6, linewidth=0)
        for i, C in enumerate(budgets):
            n = np.geomspace(N.min() / 2, N.max() * 2, 50)
            ax.plot(np.log10(n), np.log10(C / (6 * n)), d.law.predict(n, C / (6 * n)), color=cmap(i), lw=2,
                    label=f"C = {C:.2g}")
        pN, pD, pL = optimal_path(d)
        ax.plot(np.log10(pN), np.log10(pD), pL, color="black", lw=2, ls="--", label="compute-optimal path")
        resid = (L - d.law.predict(N, D)) / d.law.predict(N, D)
        sc = ax.scatter(np.log10(N), np.log10(D), L, c=resid * 100, cmap="RdBu_r", s=30, depthshade=False,
                        vmin=-abs(resid).max() * 100, vmax=abs(resid).max() * 100)
        if len(d.holdouts):
            ax.scatter(np.log10(d.holdouts["N"]), np.log10(d.holdouts["D"]), d.holdouts["loss"], c="gold",
                       marker="D", s=60, edgecolors="k", label="held out")
        fig.colorbar(sc, ax=ax, shrink=0.6, label="residual %")
        ax.set_xlabel("log10 N")
        ax.set_ylabel("log10 D")
        ax.set_zlabel("loss")
        # seen from the large-N, large-D corner the surface rises away from the viewer and never hides
        # itself, so the IsoFLOP valleys show whole (from the small-D side the raised front edge folds
        # over them)
        ax.view_init(elev=25, azim=45)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"Loss landscape ({d.law.form} law)")
        written += _save(fig, out, "landscape")

    # 2. IsoFLOP curves
    fig, ax = plt.subplots(figsize=(7, 4.5))
    optima = {round(o["C"], 0): o for o in d.optima}
    for i, C in enumerate(budgets):
        g = d.finals[d.finals["budget"] == C].sort_values("N")
        ax.scatter(g["N"], g["loss"], color=cmap(i), label=f"C = {C:.2g}", zorder=3)
        o = optima.get(round(C, 0))
        if o:
            x = np.linspace(np.log(g["N"].min()) - 0.3, np.log(g["N"].max()) + 0.3, 60)
            ax.plot(np.exp(x), o["curvature"] * (x - np.log(o["N_opt"])) ** 2 + o["loss_opt"], color=cmap(i))
            ax.scatter([o["N_opt"]], [o["loss_opt"]], marker="*", s=200, color=cmap(i), edgecolors="k", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("validation loss")
    ax.set_title("IsoFLOP curves and their minima")
    ax.legend()
    written += _save(fig, out, "isoflop")

    # 3. frontier
    law = d.law2 or d.law3
    if law is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        Cs = np.geomspace(min(budgets) / 3, 1e25, 80)
        a = law.allocate(Cs)
        ref = PUBLISHED["besiroglu2024"].allocate(Cs)
        optima = d.optima
        pub = published_points()
        for ax, key, pub_key, label in ((axes[0], "N_opt", "params_active", "N*"), (axes[1], "D_opt", "tokens", "D*")):
            band = interval(law, lambda s, key=key: law.allocate(Cs, params=s)[key])
            if band is not None:
                ax.fill_between(Cs, band[0], band[1], alpha=0.25, label="90% bootstrap")
            ax.plot(Cs, a[key], label=f"this ladder (approach {law.approach})")
            ax.plot(Cs, ref[key], "k:", lw=1, label="Chinchilla refit (Besiroglu 2024)")
            if optima:
                ax.scatter([o["C"] for o in optima], [o[key] for o in optima], color="tab:orange", s=25, zorder=3,
                           label="IsoFLOP minima")
            ax.scatter([m["compute_flops"] for m in pub], [m[pub_key] for m in pub], marker="D", s=18,
                       color="tab:red", zorder=3, label="published models")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("C (FLOPs)")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        axes[0].set_title("Compute-optimal parameters")
        axes[1].set_title("Compute-optimal tokens")
        written += _save(fig, out, "frontier")

    # 4. curves
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, g in d.curves.groupby("run"):
        g = g.sort_values("D")
        ax.plot(g["D"], g["loss"], lw=2.5 if bool(g["holdout"].iloc[0]) else 1, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("validation loss")
    ax.set_title("Training curves")
    written += _save(fig, out, "curves")

    # 5. prediction check
    if d.law is not None and len(d.holdouts):
        fig, ax = plt.subplots(figsize=(4.8, 4.5))
        h = d.holdouts
        pred = d.law.predict(h["N"].to_numpy(float), h["D"].to_numpy(float))
        ax.scatter(pred, h["loss"], s=80, c="gold", edgecolors="k", zorder=3)
        lo, hi = min(pred.min(), h["loss"].min()) * 0.97, max(pred.max(), h["loss"].max()) * 1.03
        ax.plot([lo, hi], [lo, hi], "k:")
        ax.set_xlabel("predicted loss")
        ax.set_ylabel("actual loss")
        ax.set_title("Held-out runs")
        written += _save(fig, out, "prediction")
    return written
