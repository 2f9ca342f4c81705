"""One self-contained HTML page: the shell every scalelab page shares (the ladder report, every lab).

Title, a version/date line, optional header rows (label, value), then the body's sections. Writing
is atomic. Figures are embedded by the callers (plotly divs, or PNGs as data URIs), never linked.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from scalelab import __version__
from scalelab.io import atomic_write_text

STYLE = """
 body { font-family: system-ui, -apple-system, sans-serif; margin: 0 auto; max-width: 1250px; padding: 1em 2em;
        color: #222; }
 h1 { font-size: 1.5em; margin-bottom: 0.2em; } .meta { color: #555; font-size: 0.9em; }
 table.hdr { border-collapse: collapse; margin: 0.8em 0 1.5em; font-size: 0.9em; }
 table.hdr td { padding: 2px 14px 2px 0; vertical-align: top; text-align: left; border: none; }
 table.hdr td:first-child { color: #666; }
 table.data { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.88em; }
 table.data td, table.data th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: right; }
 table.data th { background: #f4f4f4; }
 img { max-width: 100%; } p { max-width: 62em; } section { margin-bottom: 2.5em; }
 p.note { color: #444; font-size: 0.9em; max-width: 60em; }
"""


# plotly.js once, then one global setting: WebGL scenes at the screen's own pixel ratio. plotly's
# default (`plotGlPixelRatio: 2`, meant for image export) draws a 1x screen's 3D canvas at 4x the
# pixels; in software WebGL (headless Chromium here) resizing that canvas alone took 250 ms and the
# whole report rendered 0.2 s slower (docs/LOG.md). Retina screens still get 2.
PLOTLY_JS = """<script>{plotlyjs}</script>
<script>Plotly.setPlotConfig({{plotGlPixelRatio: window.devicePixelRatio || 1}});</script>"""


def plotly_script() -> str:
    """plotly.js embedded once per page (offline), with the setting above."""
    from plotly.offline import get_plotlyjs

    return PLOTLY_JS.format(plotlyjs=get_plotlyjs())


def html_page(title: str, body: str, header: dict | None = None, head_extra: str = "") -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(', '.join(v) if isinstance(v, list) else str(v))}"
                   "</td></tr>" for k, v in (header or {}).items())
    hdr = f'<table class="hdr">{rows}</table>' if rows else ""
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>{head_extra}</head><body>\n<h1>{html.escape(title)}</h1>"
            f'<div class="meta">scalelab {__version__}, written {date}</div>\n{hdr}\n{body}\n</body></html>\n')


def write_page(path: str | Path, title: str, body: str, header: dict | None = None, head_extra: str = "") -> Path:
    return atomic_write_text(path, html_page(title, body, header, head_extra))


def png_img(path: Path) -> str:
    """A PNG embedded as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def table_html(rows: list[dict], floatfmt: str = "{:.4g}") -> str:
    """A list of same-keyed dicts as an HTML table (floats formatted with ``floatfmt``)."""
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    cell = lambda v: html.escape(floatfmt.format(v) if isinstance(v, float) else str(v))  # noqa: E731
    body = "".join("<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="data"><tr>{head}</tr>{body}</table>'
