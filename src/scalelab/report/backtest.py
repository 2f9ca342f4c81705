"""The back-test's page (`scalelab backtest --html`): figures drawn from `run_backtest`'s result,
nothing recomputed but medians.

* error against extrapolation: every held-out loss, |relative error| vs the ratio of its compute to
  the largest fitted run, one colour per method (open markers: untouched datasets);
* median error by dataset: methods x datasets;
* interval coverage: the fraction of held-out losses inside each method's stated interval.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from scalelab.report.page import plotly_script, table_html, write_page

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _points(res: dict) -> pd.DataFrame:
    df = pd.DataFrame([p for p in res["points"] if "error" not in p])
    return df.assign(abs_error=df["rel_error"].abs() * 100)


def error_vs_ratio(res: dict) -> go.Figure:
    df, fig = _points(res), go.Figure()
    for i, (m, g) in enumerate(df.groupby("method", sort=False)):
        for untouched, sub in g.groupby("untouched"):
            fig.add_trace(go.Scatter(
                x=sub["ratio"], y=sub["abs_error"], mode="markers", name=m + (" (untouched)" if untouched else ""),
                legendgroup=m, marker=dict(symbol="circle-open" if untouched else "circle", size=6,
                                           color=PALETTE[i % len(PALETTE)]),
                text=sub["dataset"] + " " + sub["run"].astype(str),
                hovertemplate="%{text}<br>ratio %{x:.3g}x<br>|error| %{y:.2f}%<extra>" + m + "</extra>"))
    fig.update_xaxes(type="log", title="extrapolation ratio (C / largest fitted C)")
    fig.update_yaxes(type="log", title="|relative error| (%)")
    fig.update_layout(title="Held-out losses: error against extrapolation", height=480)
    return fig


def by_dataset(res: dict) -> go.Figure:
    t = pd.DataFrame(res["by_dataset"]).pivot_table(index="method", columns="dataset", values="median_abs_error",
                                                     sort=False) * 100
    untouched = {r["dataset"] for r in res["by_dataset"] if r["untouched"]}
    cols = [c + ("*" if c in untouched else "") for c in t.columns]
    fig = go.Figure(go.Heatmap(z=t.to_numpy(), x=cols, y=list(t.index), colorscale="Viridis", reversescale=True,
                               text=t.round(2).astype(str).to_numpy(), texttemplate="%{text}%",
                               colorbar=dict(title="median |err| %")))
    fig.update_layout(title="Median |relative error| by dataset (* untouched)", height=120 + 40 * len(t))
    return fig


def coverage(res: dict) -> go.Figure:
    s = pd.DataFrame(res["summary"])
    fig = go.Figure()
    for part, sub in s.groupby("data", sort=False):
        fig.add_trace(go.Bar(x=sub["method"], y=sub["coverage"] * 100, name=part,
                             customdata=sub["median_rel_width"] * 100,
                             hovertemplate="%{y:.1f}% covered, median width %{customdata:.2f}%"))
    fig.add_hline(y=res["level"] * 100, line_dash="dash", annotation_text=f"stated {res['level']:.0%}")
    fig.update_layout(title="How often the stated interval covered the held-out loss", barmode="group",
                      yaxis=dict(title="coverage (%)", range=[0, 100]), height=420)
    return fig


FIGURES = {"error_vs_ratio": error_vs_ratio, "by_dataset": by_dataset, "coverage": coverage}


def write_backtest_page(res: dict, out: str | Path) -> Path:
    sections = [plotly_script()]
    for name, make in FIGURES.items():
        div = make(res).to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                                config={"displaylogo": False})
        sections.append(f'<section id="{name}">{div}</section>')
    rows = [{k: r[k] for k in ("method", "data", "points", "median_abs_error", "worst_abs_error", "coverage",
                               "median_rel_width", "median_ratio")} for r in res["summary"]]
    sections.append("<section><h2>Summary</h2>" + table_html(rows) + '<p class="note">' + html.escape(
        "Errors and widths are fractions of the loss; ratio = held-out compute / largest fitted compute. Datasets, "
        "their sources, licences and citations: `scalelab data list`.") + "</p></section>")
    header = {"level": f"{res['level']:.0%}", "datasets": sorted({r["dataset"] for r in res["by_dataset"]}),
              "methods": list(dict.fromkeys(r["method"] for r in res["summary"]))}
    return write_page(out, "scalelab back-test: forecasts of held-out runs on public ladders", "\n".join(sections),
                      header=header)
