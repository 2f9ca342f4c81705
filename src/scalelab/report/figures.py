"""The report's interactive figures (plotly). Each takes `ReportData` and returns a go.Figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from scalelab.laws.published import PUBLISHED
from scalelab.report.data import ReportData, gather, hover

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _surface_mesh(X: np.ndarray, Y: np.ndarray, Z: np.ndarray, name: str) -> go.Mesh3d:
    """A gridded surface as a triangle mesh coloured by height. It looks like go.Surface but draws
    in ~1 s less in software WebGL (headless Chromium here: 2.9 s vs 4.0 s for the whole demo
    report), where the surface trace's update and shaders dominated the page (docs/LOG.md)."""
    rows, cols = Z.shape
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    # each grid cell (a b / c d) split into triangles (a, b, c) and (b, d, c)
    return go.Mesh3d(x=X.ravel(), y=Y.ravel(), z=Z.ravel(), i=np.concatenate([a, b]), j=np.concatenate([b, d]),
                     k=np.concatenate([c, c]), intensity=Z.ravel(), colorscale="Viridis", opacity=0.75,
                     showscale=False, name=name, showlegend=True,
                     hovertemplate="N %{x:.3g}<br>D %{y:.3g}<br>L %{z:.4f}<extra></extra>")


def landscape(d: ReportData) -> go.Figure:
    """Fitted L(N, D) over log axes, runs coloured by residual, IsoFLOP lines, compute-optimal path.
    The camera sits above the large-N, large-D corner: from there the surface rises away and never
    hides itself, so every IsoFLOP valley shows whole (from the small-D side the raised front edge
    folded over the valleys, and the translucent overlap drew as a hatch)."""
    N, D, _ = d.final_arrays()
    fig, ls = go.Figure(), d.landscape
    if ls is not None:
        fig.add_trace(_surface_mesh(ls.N, ls.D, ls.loss, name="fitted L(N, D)"))
        for i, (C, n, dd, loss) in enumerate(ls.isoflops):
            fig.add_trace(go.Scatter3d(x=n, y=dd, z=loss, mode="lines", name=f"IsoFLOP {C:.2g}",
                                       line=dict(color=COLORS[i % 8], width=5)))
        pN, pD, pL = ls.path
        fig.add_trace(go.Scatter3d(x=pN, y=pD, z=pL, mode="lines", name="compute-optimal path",
                                   line=dict(color="black", width=7, dash="dash")))
    resid = ls.residual if ls is not None else np.zeros(len(N))
    fig.add_trace(go.Scatter3d(x=N, y=D, z=d.finals["loss"], mode="markers", name="runs",
                               marker=dict(size=5, color=resid * 100, colorscale="RdBu_r", cmid=0,
                                           colorbar=dict(title="residual %", x=1.0)),
                               text=[hover(d, r) for _, r in d.finals.iterrows()],
                               hovertemplate="%{text}<extra></extra>"))
    if len(d.holdouts):
        fig.add_trace(go.Scatter3d(x=d.holdouts["N"], y=d.holdouts["D"], z=d.holdouts["loss"], mode="markers",
                                   name="held out", marker=dict(size=8, symbol="diamond", color="gold"),
                                   text=[hover(d, r) for _, r in d.holdouts.iterrows()],
                                   hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title="Loss landscape: fitted L(N, D), runs, IsoFLOP lines and the compute-optimal path",
                      scene=dict(xaxis=dict(title="N (parameters)", type="log", dtick="D2"),
                                 yaxis=dict(title="D (tokens)", type="log", dtick="D2"),
                                 zaxis=dict(title="loss"), camera=dict(eye=dict(x=1.6, y=1.6, z=0.9))),
                      height=650, margin=dict(l=0, r=0, t=50, b=0), legend=dict(x=0, y=1))
    return fig


def isoflop(d: ReportData) -> go.Figure:
    fig = go.Figure()
    parabolas = {p.C: p for p in d.parabolas}
    for i, C in enumerate(d.budgets):
        g = d.finals[d.finals["budget"] == C].sort_values("N")
        c = COLORS[i % 8]
        fig.add_trace(go.Scatter(x=g["N"], y=g["loss"], mode="markers", name=f"C = {C:.2g}",
                                 marker=dict(color=c, size=9), text=[hover(d, r) for _, r in g.iterrows()],
                                 hovertemplate="%{text}<extra></extra>"))
        p = parabolas.get(C)
        if p:
            o = p.optimum
            fig.add_trace(go.Scatter(x=p.N, y=p.loss, mode="lines", line=dict(color=c), showlegend=False,
                                     hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=[o["N_opt"]], y=[o["loss_opt"]], mode="markers", showlegend=False,
                                     marker=dict(color=c, symbol="star", size=15, line=dict(color="black", width=1)),
                                     hovertemplate=f"minimum C={C:.2g}<br>N* %{{x:.3g}}<br>L %{{y:.4f}}" +
                                                   (" (at the edge!)" if o["edge"] else "") + "<extra></extra>"))
    fig.update_layout(title="IsoFLOP curves: loss vs N at fixed compute, fitted parabolas in ln N and their minima",
                      xaxis=dict(title="N (parameters)", type="log"), yaxis=dict(title="validation loss"), height=500)
    return fig


def frontier(d: ReportData) -> go.Figure | None:
    from plotly.subplots import make_subplots

    f = d.frontier
    if f is None:  # no law: no frontier to draw (the report says how to get one)
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("N*(C)", "D*(C)"))
    Cs = f.C
    for col, key in ((1, "N_opt"), (2, "D_opt")):
        band, legend = f.bands[key], col == 1
        if band is not None:
            fig.add_trace(go.Scatter(x=np.concatenate([Cs, Cs[::-1]]), y=np.concatenate([band[1], band[0][::-1]]),
                                     fill="toself", fillcolor="rgba(31,119,180,0.2)", line=dict(width=0),
                                     name="90% bootstrap band", showlegend=legend, hoverinfo="skip"), row=1, col=col)
        fig.add_trace(go.Scatter(x=Cs, y=f.alloc[key], mode="lines", name=f"this ladder (approach {f.law.approach})",
                                 line=dict(color=COLORS[0]), showlegend=legend), row=1, col=col)
        fig.add_trace(go.Scatter(x=Cs, y=f.reference[key], mode="lines", name="Chinchilla refit (Besiroglu 2024)",
                                 line=dict(color="gray", dash="dot"), showlegend=legend), row=1, col=col)
        if d.optima:
            fig.add_trace(go.Scatter(x=[o["C"] for o in d.optima], y=[o[key] for o in d.optima], mode="markers",
                                     name="IsoFLOP minima", marker=dict(color=COLORS[1], size=9),
                                     showlegend=legend), row=1, col=col)
    pub = f.published
    for col, key in ((1, "params_active"), (2, "tokens")):
        # names in the hover text only: a dozen models within two decades of compute overprint
        fig.add_trace(go.Scatter(x=[m["compute_flops"] for m in pub], y=[m[key] for m in pub], mode="markers",
                                 text=[m["name"] for m in pub],
                                 marker=dict(color=COLORS[3], symbol="diamond", size=8), name="published models",
                                 showlegend=col == 1, customdata=[m["source"] for m in pub],
                                 hovertemplate="%{text}<br>C %{x:.3g}<br>%{y:.3g}<br>%{customdata}<extra></extra>"),
                      row=1, col=col)
    for col, t in ((1, "N* (parameters)"), (2, "D* (tokens)")):
        # powers of ten throughout (plotly's default mixes "1T" with 10^15 past the SI prefixes it knows)
        fig.update_xaxes(type="log", title="training compute C (FLOPs)", exponentformat="power", row=1, col=col)
        fig.update_yaxes(type="log", title=t, exponentformat="power", row=1, col=col)
    fig.update_layout(title="Compute-optimal frontier, extrapolated, with published models on the same axes",
                      height=520)
    return fig


def curves(d: ReportData) -> go.Figure:
    fig = go.Figure()
    runs = d.curves.groupby("run")
    for name, g in sorted(runs, key=lambda kv: (kv[1]["budget"].iloc[0], kv[1]["N"].iloc[0])):
        g = g.sort_values("D")
        spec = d.specs.get(name, {})
        fig.add_trace(go.Scatter(x=g["D"], y=g["loss"], mode="lines+markers", name=name,
                                 line=dict(dash="dash" if spec.get("decay_start") else "solid",
                                           width=3 if bool(g["holdout"].iloc[0]) else 1.5),
                                 marker=dict(size=4), text=[hover(d, r) for _, r in g.iterrows()],
                                 hovertemplate="%{text}<extra></extra>", legendgroup=str(g["budget"].iloc[0])))
    fig.update_layout(title="Training curves: validation loss vs tokens (dashed: WSD cooldown branches)",
                      xaxis=dict(title="tokens D", type="log", dtick="D2"),
                      yaxis=dict(title="validation loss", type="log"),
                      height=520)
    return fig


def prediction(d: ReportData) -> go.Figure | None:
    from plotly.subplots import make_subplots

    chk = d.check
    if chk is None:  # no law: nothing predicted
        return None
    fig = make_subplots(rows=1, cols=2,
                        subplot_titles=("held-out runs: predicted vs actual", "residuals of the ladder runs"))
    if len(d.holdouts):
        h, pred, band = d.holdouts, chk.predicted, chk.band
        err = dict(type="data", symmetric=False, array=band[1] - pred, arrayminus=pred - band[0]) if band else None
        text = [f"{r['run']}: predicted {p:.4f}, actual {r['loss']:.4f} ({(r['loss'] - p) / p:+.2%})"
                for (_, r), p in zip(h.iterrows(), pred)]
        fig.add_trace(go.Scatter(x=pred, y=h["loss"], error_x=err, mode="markers", name="held out",
                                 marker=dict(size=12, color="gold", line=dict(color="black", width=1)),
                                 text=text, hovertemplate="%{text}<extra></extra>"), row=1, col=1)
        lo, hi = float(min(pred.min(), h["loss"].min())) * 0.97, float(max(pred.max(), h["loss"].max())) * 1.03
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="gray", dash="dot"),
                                 name="y = x"), row=1, col=1)
    f = d.finals
    flagged = [bool(d.quality.get(r)) for r in f["run"]]  # the rung checks' (ladder/quality.py): ringed red
    fig.add_trace(go.Scatter(x=f["C"], y=chk.residual * 100, mode="markers", name="ladder runs",
                             marker=dict(color=np.log10(f["N"]), colorscale="Viridis", size=8,
                                         line=dict(color=["red" if x else "rgba(0,0,0,0)" for x in flagged],
                                                   width=[2.5 if x else 0 for x in flagged])),
                             text=[hover(d, r) for _, r in f.iterrows()], hovertemplate="%{text}<extra></extra>"),
                  row=1, col=2)
    fig.update_xaxes(title="predicted loss", row=1, col=1)
    fig.update_yaxes(title="actual loss", row=1, col=1)
    fig.update_xaxes(title="compute C (FLOPs)", type="log", dtick="D2", row=1, col=2)
    fig.update_yaxes(title="residual (actual - fit) / fit, %", row=1, col=2)
    fig.update_layout(title=f"Prediction check ({d.law.form} law)", height=480)
    return fig


def _param_names(law) -> list[str]:
    if law.form == "ensemble":
        return [f"{m['method']}: {k}" for m in law.params["members"] for k in m["params"]]
    return list(law.params)


def _flat_summary(law) -> dict:
    """A law's summary with an ensemble's member parameters as "method: name" keys."""
    s = law.summary()
    if law.form == "ensemble":
        s.update({f"{m['method']}: {k}": float(v) for m in law.params["members"] for k, v in m["params"].items()})
    return s


def fit_table(d: ReportData) -> go.Figure:
    """One row per parameter: Chinchilla's (E, A, B, alpha, beta and the allocation exponents a, b),
    then those of the prediction law when it has another form (e.g. Kaplan's Nc, Dc, alpha_N,
    alpha_D), each beside the published laws of the same form."""
    names = ["E", "A", "B", "alpha", "beta", "a", "b"]
    laws = {"this ladder: approach 3": d.law3, "this ladder: approach 2": d.law2,
            "hoffmann2022": PUBLISHED["hoffmann2022"], "besiroglu2024": PUBLISHED["besiroglu2024"]}
    if d.law is not None and d.law.form != "chinchilla":
        names += [k for k in _flat_summary(d.law) if k not in names and k in _param_names(d.law)]
        laws[f"this ladder: {d.law.form} (prediction law)"] = d.law
        laws.update({k: v for k, v in PUBLISHED.items() if v.form == d.law.form})

    def col(law):
        s = _flat_summary(law)
        ci = s.get("ci", {})
        return [(f"{s[k]:.4g}" + (f" [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" if k in ci else "")) if k in s else ""
                for k in names]

    cols = {label: col(law) for label, law in laws.items() if law is not None}
    # relative widths: fits with intervals get room enough to stay on one line
    widths = [0.6] + [1.5 if label.startswith("this ladder") else 0.8 for label in cols]
    fig = go.Figure(go.Table(columnwidth=widths,
                             header=dict(values=["parameter", *cols], fill_color="#dde", align="left", height=30),
                             cells=dict(values=[names, *cols.values()], align="left", height=26)))
    fig.update_layout(title="Fitted parameters (90% bootstrap intervals) beside published laws",
                      height=120 + 28 * len(names), margin=dict(t=50, b=10))
    return fig


def tasks(d: ReportData) -> go.Figure | None:
    """Ladders with tasks: per task, the task loss against compute (step 1 of a task forecast) and the
    metric against the task loss (step 2), every evaluation of every run (finished runs' last in bold)."""
    if d.tasks.empty:
        return None
    from plotly.subplots import make_subplots

    names = sorted(d.tasks["task"].unique())
    fig = make_subplots(rows=len(names), cols=2, subplot_titles=[t for n in names for t in
                                                                 (f"{n}: answer bits/byte vs compute",
                                                                  f"{n}: exact match vs answer bits/byte")])
    for i, name in enumerate(names, 1):
        g = d.tasks[d.tasks["task"] == name]
        for final, size, op in ((False, 4, 0.35), (True, 9, 1.0)):
            h = g[g["final"] == final]
            text = [f"{r['run']} step {r['step']}<br>C = {r['C']:.3g}<br>exact match {r['exact_match']:.3f}<br>"
                    f"answer bpb {r['answer_bpb']:.3f}" for _, r in h.iterrows()]
            common = dict(mode="markers", marker=dict(size=size, opacity=op, color="#1f77b4" if final else "#999"),
                          text=text, hovertemplate="%{text}<extra></extra>", showlegend=i == 1,
                          name="finished runs" if final else "earlier evaluations", legendgroup=str(final))
            fig.add_trace(go.Scatter(x=h["C"], y=h["answer_bpb"], **common), row=i, col=1)
            fig.add_trace(go.Scatter(x=h["answer_bpb"], y=h["exact_match"], **{**common, "showlegend": False}),
                          row=i, col=2)
        fig.update_xaxes(type="log", title_text="C = 6ND", row=i, col=1)
        fig.update_yaxes(type="log", title_text="answer bits per byte", row=i, col=1)
        fig.update_xaxes(title_text="answer bits per byte", row=i, col=2)
        fig.update_yaxes(title_text="exact match", range=[-0.02, 1.02], row=i, col=2)
    fig.update_layout(title="Tasks: the two steps of a task forecast, measured on this ladder",
                      height=320 * len(names) + 80)
    return fig


FIGURES = {"landscape": landscape, "isoflop": isoflop, "frontier": frontier, "curves": curves,
           "prediction": prediction, "fit_table": fit_table, "tasks": tasks}


def ladder_figures(src) -> dict[str, go.Figure]:
    """The report's plotly figures of a ladder directory, by name (for a notebook: each displays inline)."""
    d = gather(src)
    return {name: fig for name, make in FIGURES.items() if (fig := make(d)) is not None}
