"""One self-contained HTML file: plotly.js embedded once, no CDN, opens offline."""

from __future__ import annotations

import html
from pathlib import Path

from scalelab.ladder.results import ladder_dir
from scalelab.report.data import ReportData, gather
from scalelab.report.figures import FIGURES
from scalelab.report.page import plotly_script, write_page
from scalelab.report.static import write_static

NOTES = {
    "landscape": "Drag to rotate. The surface is the law used for predictions; dots are the ladder's final points "
                 "coloured by their residual against it; coloured lines follow fixed compute; the dashed line is "
                 "the compute-optimal path.",
    "isoflop": "Each budget's runs trade parameters for tokens at fixed compute; the valley's bottom (star) is N*(C).",
    "frontier": "N*(C) and D*(C) from this ladder, extrapolated with bootstrap bands, next to the Chinchilla refit and "
                "published models (C = 6 N_active D).",
    "curves": "Every evaluation of every run. With a cosine schedule only a run's last point is a valid (N, D) "
              "point; WSD cooldown branches are dashed.",
    "prediction": "Left: runs held out of the fit, predicted before they were trained (error bars: the 90% forecast "
                  "interval, calibrated when the prediction law is the default method). "
                  "Right: how far each ladder run sits from the fitted law (ringed red: a rung the quality "
                  "checks flag; the header and its hover text say why).",
    "fit_table": "",
    "tasks": "Held-out problems of each task, scored at every evaluation with the run's own tokenizer. Left: the "
             "task loss falls with compute as the loss does; right: the metric as a function of the task loss, "
             "the relation a forecast's sigmoid fits (`scalelab ladder export DIR --out t.csv --tasks`, then "
             "`scalelab fit t.csv --metric exact_match --via answer_bpb`).",
}


def write_report(src: str | Path, out: str | Path | None = None, png_dir: str | Path | None = None,
                 data: ReportData | None = None) -> Path:
    d = data or gather(src)
    out = Path(out) if out else ladder_dir(src) / "report.html"
    sections = [plotly_script()]
    for name, make in FIGURES.items():
        fig = make(d)
        if fig is None:  # a section this ladder has nothing for (tasks; without a law, the frontier and check)
            if name == "frontier" and d.law3 is None:
                cmd = html.escape(f"scalelab report {src} --fit")
                sections.append(f'<section id="{name}"><p class="note">No fitted law in this ladder, so no '
                                f'compute-optimal frontier and no forecast check: `{cmd}` fits it first.</p></section>')
            continue
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                              config={"displaylogo": False, "responsive": True})
        note = f'<p class="note">{html.escape(NOTES[name])}</p>' if NOTES[name] else ""
        sections.append(f'<section id="{name}">{div}{note}</section>')
    write_page(out, d.title, "\n".join(sections), header=d.header)
    if png_dir is not None:
        write_static(d, png_dir)
    return out
