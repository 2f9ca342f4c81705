"""The task back-test's page (`scalelab backtest --tasks --html`): per task, the two steps of the
default method as fitted on Pythia 70M-1.4B, with the held-out 2.8B-12B models and the forecasts.
Drawn from `laws.task_backtest.task_curves` and the scored rows; nothing is refitted here."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from scalelab.report.page import plotly_script, table_html, write_page


def _err(values, lo, hi) -> dict:
    return dict(type="data", symmetric=False, array=[max(h - v, 0) for v, h in zip(values, hi)],
                arrayminus=[max(v - low, 0) for v, low in zip(values, lo)])


def task_figure(task: str, c: dict, via: str, level: float) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"step 1: {via} against parameters",
                                                        f"step 2: accuracy against {via}"))
    f, h, p = c["fitted"], c["held_out"], c["forecast"]
    fig.add_trace(go.Scatter(x=f["N"], y=f[via], mode="markers", name="fitted models", marker=dict(color="#1f77b4")),
                  1, 1)
    fig.add_trace(go.Scatter(x=h["N"], y=p[via]["value"], mode="markers", name=f"forecast ({level:.0%} interval)",
                             error_y=_err(p[via]["value"], p[via]["lo"], p[via]["hi"]),
                             marker=dict(symbol="square", color="gray")), 1, 1)
    fig.add_trace(go.Scatter(x=h["N"], y=h[via], mode="markers", name="held-out models (measured)",
                             marker=dict(symbol="star", size=11, color="#d62728")), 1, 1)
    fig.add_trace(go.Scatter(x=f[via], y=f["acc"], mode="markers", showlegend=False, marker=dict(color="#1f77b4")),
                  1, 2)
    fig.add_trace(go.Scatter(x=c["sigmoid"]["x"], y=c["sigmoid"]["y"], mode="lines", name="fitted sigmoid",
                             line=dict(color="gray", width=1)), 1, 2)
    fig.add_trace(go.Scatter(x=p[via]["value"], y=p["acc"]["value"], mode="markers", showlegend=False,
                             error_y=_err(p["acc"]["value"], p["acc"]["lo"], p["acc"]["hi"]),
                             marker=dict(symbol="square", color="gray")), 1, 2)
    fig.add_trace(go.Scatter(x=h[via], y=h["acc"], mode="markers", showlegend=False, text=h["model"],
                             marker=dict(symbol="star", size=11, color="#d62728")), 1, 2)
    fig.update_xaxes(type="log", title_text="parameters", row=1, col=1)
    fig.update_xaxes(title_text=via, row=1, col=2)
    fig.update_yaxes(title_text=via, row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_layout(title=task, height=420)
    return fig


def write_task_backtest_page(res: dict, curves: dict, out: str | Path) -> Path:
    sections = [plotly_script(), "<section><h2>Summary</h2>" + table_html(res["summary"]) + '<p class="note">' +
                html.escape(res["data"] + ". Errors and widths in accuracy points; coverage of the stated "
                            f"{res['level']:.0%} interval.") + "</p></section>"]
    for i, (task, c) in enumerate(curves["tasks"].items()):
        if curves["via"] is None:
            continue
        div = task_figure(task, c, curves["via"], curves["level"]).to_html(
            full_html=False, include_plotlyjs=False, div_id=f"task-{i}", config={"displaylogo": False})
        sections.append(f"<section>{div}</section>")
    return write_page(out, f"scalelab task back-test: the two steps of the {curves['method']} method",
                      "\n".join(sections), header={"method": curves["method"], "level": f"{res['level']:.0%}"})
