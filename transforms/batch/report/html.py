"""One plant's report as one self-contained HTML file: text, tables and figures embedded as data URIs.

Self-contained because a report is mailed, attached to a ticket or opened from a shared drive, where
relative links to images break. The PNGs are also written beside it, for slides.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1040px;margin:2em auto;padding:0 1em;
color:#1d2433;line-height:1.45}
h1{margin-bottom:.1em}h2{margin-top:2em;border-bottom:1px solid #dde;padding-bottom:.2em}
.meta{color:#667;font-size:.9em}.note{color:#555;font-size:.92em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #dde;padding:.25em .6em;text-align:left}th{background:#f3f5f9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
.bad{color:#b00020;font-weight:600}.good{color:#1b7a3a;font-weight:600}
nav a{margin-right:1em}
"""


@dataclass
class Figure:
    """A PNG and the file name it is written under beside the HTML."""

    name: str
    png: bytes
    alt: str


@dataclass
class Section:
    """One heading of the report: why it matters, what was measured, and where it comes from."""

    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[object]] = ()
    source: str = ""

    @property
    def anchor(self) -> str:
        return "".join(ch if ch.isalnum() else "-" for ch in self.title.lower()).strip("-")


def _cell(value: object) -> str:
    if value is None:
        return "<td class='note'>–</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int):
        return f"<td class='num'>{value:,}</td>"
    if isinstance(value, float):
        text = f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return f"<td class='num'>{text}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def render(title: str, subtitle: str, sections: Sequence[Section], links: Sequence[tuple[str, str]] = ()) -> str:
    """The HTML document. Every text is escaped; figures are embedded as base64 PNG data URIs."""
    out = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{html.escape(subtitle)}</p>"]
    if links:
        out.append("<nav>" + "".join(f"<a href='{html.escape(href)}'>{html.escape(text)}</a>"
                                     for text, href in links) + "</nav>")
    out.append("<ul>" + "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in sections)
               + "</ul>")
    for s in sections:
        out.append(f"<h2 id='{s.anchor}'>{html.escape(s.title)}</h2>")
        if s.text:
            out += [f"<p>{html.escape(p)}</p>" for p in s.text.split("\n\n")]
        for fig in s.figures:
            data = base64.b64encode(fig.png).decode()
            out.append(f"<img src='data:image/png;base64,{data}' alt='{html.escape(fig.alt)}'>")
        if s.headers:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.headers) + "</tr>")
            out += ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in s.rows]
            out.append("</table>")
        if s.source:
            out.append(f"<p class='note'>Source: {html.escape(s.source)}</p>")
    out.append("</body></html>")
    return "\n".join(out)
