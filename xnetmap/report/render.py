"""Render report blocks (:mod:`xnetmap.report.content`) to Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html

from xnetmap.report.content import Heading, Image, Para, Table

_NUMERIC = set("0123456789,.-+[]% n/a<e")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header, rows) -> str:
    """Pipe table; an empty cell is written ``| |`` as in DESIGN.md's Table 1."""

    def line(cells) -> str:
        return "|" + "|".join(f" {_md_cell(c)} " if c else " " for c in cells) + "|"

    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def to_markdown(blocks) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Table):
            parts.append(markdown_table(b.header, b.rows))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt}]({b.file})")
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.25rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono { font-family: ui-monospace, monospace; font-size: 0.85em; word-break: break-all; }
figure { display: inline-block; margin: 0 1rem 1rem 0; }
"""


def _td(text: str) -> str:
    cls = ""
    if text and all(ch in _NUMERIC for ch in text):
        cls = ' class="num"'
    elif len(text) >= 32 and all(ch in "0123456789abcdef" for ch in text):
        cls = ' class="mono"'
    return f"<td{cls}>{html.escape(text)}</td>"


def to_html(blocks, images: dict[str, bytes], title: str = "xnetmap study") -> str:
    """A single HTML page; PNGs in ``images`` (file name -> bytes) are embedded as data URIs."""
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "\n".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows)
            ident = f' id="{html.escape(b.name)}"' if b.name else ""
            body.append(f"<table{ident}>\n<tr>{head}</tr>\n{rows}\n</table>")
        elif isinstance(b, Image):
            data = images.get(b.file)
            src = (
                "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                if data is not None
                else html.escape(b.file)
            )
            body.append(
                f'<figure><img src="{src}" alt="{html.escape(b.alt)}">'
                f"<figcaption>{html.escape(b.alt)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
