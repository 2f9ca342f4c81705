"""Static figures (PNG and SVG) for papers and slides, drawn with matplotlib from the same data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter

from scalelab import plotting as plt  # pyplot's calls without pyplot: the user's backend is left alone
from scalelab.report.data import ReportData


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        tmp = out / f".{name}.{ext}.part"  # renamed into place: a killed report leaves no half figure
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        os.replace(tmp, p)
        paths.append(p)
    return paths


def write_static(d: ReportData, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if d.landscape is not None:
        written += _save(_landscape(d), out, "landscape")
    written += _save(_isoflop(d), out, "isoflop")
    if d.frontier is not None:
        written += _save(_frontier(d), out, "frontier")
    written += _save(_curves(d), out, "curves")
    if d.check is not None and len(d.holdouts):
        written += _save(_prediction(d), out, "prediction")
    if not d.tasks.empty:
        written += _save(_tasks(d), out, "tasks")
    return written


def _tasks(d: ReportData):
    names = sorted(d.tasks["task"].unique())
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.6 * len(names)), squeeze=False)
    for (a1, a2), name in zip(axes, names):
        g = d.tasks[d.tasks["task"] == name]
        for final, size, alpha in ((False, 8, 0.35), (True, 30, 1.0)):
            h = g[g["final"] == final]
            a1.scatter(h["C"], h["answer_bpb"], s=size, alpha=alpha, color="C0" if final else "gray")
            a2.scatter(h["answer_bpb"], h["exact_match"], s=size, alpha=alpha, color="C0" if final else "gray")
        a1.set(xscale="log", yscale="log", xlabel="C = 6ND", ylabel="answer bits per byte", title=name)
        a1.xaxis.set_minor_formatter(NullFormatter())
        a2.set(xlabel="answer bits per byte", ylabel="exact match", ylim=(-0.02, 1.02), title=name)
    fig.tight_layout()
    return fig


def _landscape(d: ReportData):
    ls, cmap = d.landscape, plt.get_cmap("tab10")
    N, D, L = d.final_arrays()
    fig = plt.figure(figsize=(8, 6))
    # drawn in call order (surface first), so runs and lines stay visible rather than tinted by
    # whichever surface facets matplotlib's painter's sort puts in front of them
    ax = fig.add_subplot(projection="3d", computed_zorder=False)
    ax.plot_surface(np.log10(ls.N), np.log10(ls.D), ls.loss, cmap="viridis", alpha=0.6, linewidth=0)
    for i, (C, n, dd, loss) in enumerate(ls.isoflops):
        ax.plot(np.log10(n), np.log10(dd), loss, color=cmap(i), lw=2, label=f"C = {C:.2g}")
    pN, pD, pL = ls.path
    ax.plot(np.log10(pN), np.log10(pD), pL, color="black", lw=2, ls="--", label="compute-optimal path")
    r = ls.residual
    sc = ax.scatter(np.log10(N), np.log10(D), L, c=r * 100, cmap="RdBu_r", s=30, depthshade=False,
                    vmin=-abs(r).max() * 100, vmax=abs(r).max() * 100)
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
    return fig


def _isoflop(d: ReportData):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap, parabolas = plt.get_cmap("tab10"), {p.C: p for p in d.parabolas}
    for i, C in enumerate(d.budgets):
        g = d.finals[d.finals["budget"] == C]
        ax.scatter(g["N"], g["loss"], color=cmap(i), label=f"C = {C:.2g}", zorder=3)
        p = parabolas.get(C)
        if p:
            ax.plot(p.N, p.loss, color=cmap(i))
            ax.scatter([p.optimum["N_opt"]], [p.optimum["loss_opt"]], marker="*", s=200, color=cmap(i),
                       edgecolors="k", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("validation loss")
    ax.set_title("IsoFLOP curves and their minima")
    ax.legend()
    return fig


def _frontier(d: ReportData):
    f = d.frontier
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, pub_key, label in ((axes[0], "N_opt", "params_active", "N*"), (axes[1], "D_opt", "tokens", "D*")):
        band = f.bands[key]
        if band is not None:
            ax.fill_between(f.C, band[0], band[1], alpha=0.25, label="90% bootstrap")
        ax.plot(f.C, f.alloc[key], label=f"this ladder (approach {f.law.approach})")
        ax.plot(f.C, f.reference[key], "k:", lw=1, label="Chinchilla refit (Besiroglu 2024)")
        if d.optima:
            ax.scatter([o["C"] for o in d.optima], [o[key] for o in d.optima], color="tab:orange", s=25, zorder=3,
                       label="IsoFLOP minima")
        ax.scatter([m["compute_flops"] for m in f.published], [m[pub_key] for m in f.published], marker="D", s=18,
                   color="tab:red", zorder=3, label="published models")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_title("Compute-optimal parameters")
    axes[1].set_title("Compute-optimal tokens")
    return fig


def _curves(d: ReportData):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, g in d.curves.groupby("run"):
        g = g.sort_values("D")
        ax.plot(g["D"], g["loss"], lw=2.5 if bool(g["holdout"].iloc[0]) else 1, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("validation loss")
    ax.set_title("Training curves")
    return fig


def _prediction(d: ReportData):
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    h, pred = d.holdouts, d.check.predicted
    ax.scatter(pred, h["loss"], s=80, c="gold", edgecolors="k", zorder=3)
    lo, hi = min(pred.min(), h["loss"].min()) * 0.97, max(pred.max(), h["loss"].max()) * 1.03
    ax.plot([lo, hi], [lo, hi], "k:")
    ax.set_xlabel("predicted loss")
    ax.set_ylabel("actual loss")
    ax.set_title("Held-out runs")
    return fig
