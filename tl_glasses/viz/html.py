"""A single self-contained HTML page: figures embedded as PNG data URIs, tables,
the command that regenerates each section, and circuitsvis views with circuitsvis'
*local* JavaScript bundle inlined once (its CDN is unreachable offline; nothing on
the page loads anything from the network)."""
from __future__ import annotations

import base64
import html
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Page", "Section", "circuitsvis_bundle", "attention_view"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.lede{color:#555} .cmd{background:#f5f5f7;border:1px solid #e3e3e3;border-radius:4px;padding:.4em .6em;font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap}
table.data{border-collapse:collapse;font-size:.85em;margin:.6em 0} table.data td,table.data th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
table.data th{background:#fafafa} img.fig{max-width:100%;border:1px solid #eee;margin:.4em 0}
.finding{background:#eef6ff;border-left:4px solid #2f6fdb;padding:.4em .8em;margin:.6em 0}
.warn{background:#fff6e5;border-left:4px solid #e0a000;padding:.4em .8em;margin:.6em 0}
nav a{margin-right:1em} .cv{min-height:80px} div.table{overflow-x:auto}
"""


def circuitsvis_bundle() -> str:
    """circuitsvis' local browser bundle (defines the global ``CircuitsVis``)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")


def attention_view(tokens: list[str], attention, *, head_names: list[str] | None = None) -> str:
    """A circuitsvis ``AttentionPatterns`` view (needs the bundle on the page).

    ``attention``: [heads, query, key] array-like."""
    import numpy as np

    att = np.asarray(attention, dtype=float)
    div = "cv-" + uuid.uuid4().hex[:12]
    props = {"tokens": list(tokens), "attention": att.round(5).tolist()}
    if head_names:
        props["headLabels"] = head_names
    return (
        f'<div id="{div}" class="cv circuitsvis-view"></div>\n'
        f"<script>CircuitsVis.render({json.dumps(div)}, CircuitsVis.AttentionPatterns, "
        f"{json.dumps(props)});</script>"
    )


def png_img(png: bytes, alt: str = "") -> str:
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def table_html(df: pd.DataFrame, max_rows: int = 40) -> str:
    shown = df.head(max_rows)
    out = shown.to_html(index=False, classes="data", border=0, float_format=lambda v: f"{v:.4g}", na_rep="")
    if len(df) > max_rows:
        out += f"<p><i>{len(df) - max_rows} more rows in the raw results.</i></p>"
    return out


@dataclass
class Section:
    key: str
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, s: str, cls: str | None = None) -> "Section":
        tag = f'<p class="{cls}">' if cls else "<p>"
        self.parts.append(f"{tag}{s}</p>")
        return self

    def finding(self, s: str) -> "Section":
        return self.text(s, "finding")

    def warn(self, s: str) -> "Section":
        return self.text(s, "warn")

    def command(self, cmd: str) -> "Section":
        self.parts.append(f'<div class="cmd">$ {html.escape(cmd)}</div>')
        return self

    def figure(self, png: bytes, alt: str = "") -> "Section":
        self.parts.append(png_img(png, alt))
        return self

    def table(self, df: pd.DataFrame, max_rows: int = 40, caption: str = "") -> "Section":
        if caption:
            self.parts.append(f"<p><b>{html.escape(caption)}</b></p>")
        self.parts.append(table_html(df, max_rows))
        return self

    def raw(self, s: str) -> "Section":
        self.parts.append(s)
        return self


@dataclass
class Page:
    title: str
    lede: str = ""
    sections: list[Section] = field(default_factory=list)
    uses_circuitsvis: bool = False

    def section(self, key: str, title: str) -> Section:
        s = Section(key, title)
        self.sections.append(s)
        return s

    def render(self) -> str:
        nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in self.sections)
        body = "\n".join(
            f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>\n' + "\n".join(s.parts) + "</section>"
            for s in self.sections
        )
        bundle = f"<script>{circuitsvis_bundle()}</script>" if self.uses_circuitsvis else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>{bundle}</head><body>"
            f"<h1>{html.escape(self.title)}</h1><p class=\"lede\">{self.lede}</p><nav>{nav}</nav>{body}"
            "</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        from ..results import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.render())
        return path


def render_any(x: Any) -> str:  # small helper used by reports
    return html.escape(str(x))
