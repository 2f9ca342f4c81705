"""One self-contained HTML file: plotly.js embedded once, no CDN, opens offline."""

from __future__ import annotations

import datetime
import html
from pathlib import Path

from plotly.offline import get_plotlyjs

from scalelab.report.data import ReportData, gather
from scalelab.report.figures import FIGURES

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ font-family: system-ui, -apple-system, sans-serif; margin: 0 auto; max-width: 1250px; padding: 1em 2em; color: #222; }}
 h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }} .meta {{ color: #555; font-size: 0.9em; }}
 table.hdr {{ border-collapse: collapse; margin: 0.8em 0 1.5em; font-size: 0.9em; }}
 table.hdr td {{ padding: 2px 14px 2px 0; vertical-align: top; }} table.hdr td:first-child {{ color: #666; }}
 section {{ margin-bottom: 2.5em; }} p.note {{ color: #444; font-size: 0.9em; max-width: 60em; }}
</style></head><body>
<h1>{title}</h1><div class="meta">scalelab {version}, written {date}</div>
<table class="hdr">{header}</table>
{sections}
</body></html>
"""

# plotly.js once, then one global setting: WebGL scenes at the screen's own pixel ratio. plotly's
# default (`plotGlPixelRatio: 2`, meant for image export) draws a 1x screen's 3D canvas at 4x the
# pixels; in software WebGL (headless Chromium here) resizing that canvas alone took 250 ms and the
# whole report rendered 0.2 s slower (docs/LOG.md). Retina screens still get 2.
PLOTLY_JS = """<script>{plotlyjs}</script>
<script>Plotly.setPlotConfig({{plotGlPixelRatio: window.devicePixelRatio || 1}});</script>"""

NOTES = {
    "landscape": "Drag to rotate. The surface is the law used for predictions; dots are the ladder's final points "
                 "coloured by their residual against it; coloured lines follow fixed compute; the dashed line is "
                 "the compute-optimal path.",
    "isoflop": "Each budget's runs trade parameters for tokens at fixed compute; the valley's bottom (star) is N*(C).",
    "frontier": "N*(C) and D*(C) from this ladder, extrapolated with bootstrap bands, next to the Chinchilla refit and "
                "published models (C = 6 N_active D).",
    "curves": "Every evaluation of every run. With a cosine schedule only a run's last point is a valid (N, D) "
              "point; WSD cooldown branches are dashed.",
    "prediction": "Left: runs held out of the fit, predicted before they were trained (error bars: 90% bootstrap). "
                  "Right: how far each ladder run sits from the fitted law.",
    "fit_table": "",
}


def write_report(src: str | Path, out: str | Path | None = None, png_dir: str | Path | None = None,
                 data: ReportData | None = None) -> Path:
    from scalelab import __version__
    from scalelab.train.checkpoint import atomic_write_text

    d = data or gather(src)
    out = Path(out) if out else (Path(src).parent if Path(src).suffix == ".sqlite" else Path(src)) / "report.html"
    sections = [PLOTLY_JS.format(plotlyjs=get_plotlyjs())]
    for name, make in FIGURES.items():
        fig = make(d)
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                          config={"displaylogo": False, "responsive": True})
        note = f'<p class="note">{html.escape(NOTES[name])}</p>' if NOTES[name] else ""
        sections.append(f'<section id="{name}">{div}{note}</section>')
    header = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(', '.join(v) if isinstance(v, list) else str(v))}</td></tr>"
                     for k, v in d.header.items())
    page = PAGE.format(title=html.escape(d.title), version=__version__,
                       date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), header=header,
                       sections="\n".join(sections))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    if png_dir is not None:
        from scalelab.report.static import write_static

        write_static(d, png_dir)
    return out
