"""Render report blocks (:mod:`xnetmap.report.content`) to Markdown and self-contained HTML.

The HTML page has no external assets and works offline: PNG figures are embedded
as data URIs, the style and a few lines of plain JavaScript (click a column
header to sort a table; click again to reverse) are inline.
"""

from __future__ import annotations

import base64
import html
import struct

from xnetmap.report.content import Bullets, Header, Heading, Image, Para, Table

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


def _md_header(h: Header) -> str:
    models = "; ".join(f"{code} = {name} (sha256 {digest[:12]})" for name, code, digest in h.models)
    settings = ", ".join(f"{k} {v}" for k, v in h.settings)
    return f"**Models:** {models}.  \n**Settings:** {settings}."


def to_markdown(blocks) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Header):
            continue  # Markdown starts at the title; models and settings follow it
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
            if b.level == 1:
                parts += [_md_header(h) for h in blocks if isinstance(h, Header)]
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            parts.append(markdown_table(b.header, b.rows))
        elif isinstance(b, Image):
            also = ", ".join(f"[{f.rsplit('.', 1)[-1].upper()}]({f})" for f in b.also)
            parts.append(f"![{b.alt}]({b.file})" + (f"  \nAlso as {also}." if also else ""))
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
header { border-bottom: 1px solid #ccc; margin-bottom: 1rem; padding-bottom: 0.5rem; }
header h1 { margin: 0 0 0.4rem; font-size: 1.3rem; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 0.8rem;
            margin: 0.3rem 0; font-size: 0.9rem; }
header dt { font-weight: 600; }
header dd { margin: 0; }
code { font-family: ui-monospace, monospace; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.5rem 0 1.25rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f3f3f3; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono { font-family: ui-monospace, monospace; font-size: 0.85em; word-break: break-all; }
figure { display: inline-block; vertical-align: top; margin: 0 1rem 1.25rem 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; max-width: 40rem; }
"""

# Click a header to sort by that column (numbers numerically, the rest as text; n/a last).
_JS = """
(function () {
  function key(cell) {
    var t = cell.textContent.trim();
    var m = t.replace(/,/g, "").replace(/\\u2212/g, "-")
      .match(/^\\[?\\s*(-?\\d+(\\.\\d+)?(e-?\\d+)?)/i);
    return m ? [0, parseFloat(m[1]), t] : [t === "n/a" || t === "" ? 2 : 1, 0, t.toLowerCase()];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) { return a[0] - b[0]; }
    if (a[0] === 0 && a[1] !== b[1]) { return a[1] - b[1]; }
    return a[2] < b[2] ? -1 : (a[2] > b[2] ? 1 : 0);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.title = "Sort by " + th.textContent;
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return [key(row.cells[col]), i, row];
        });
        rows.sort(function (a, b) { return dir * compare(a[0], b[0]) || a[1] - b[1]; });
        rows.forEach(function (r) { body.appendChild(r[2]); });
      });
    });
  });
})();
"""


def _td(text: str) -> str:
    cls = ""
    if len(text) >= 32 and all(ch in "0123456789abcdef" for ch in text):
        cls = ' class="mono"'  # a digest, even one that happens to be all digits
    elif text and all(ch in _NUMERIC for ch in text):
        cls = ' class="num"'
    return f"<td{cls}>{html.escape(text)}</td>"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", data[16:24])


def _html_header(h: Header) -> str:
    models = "".join(
        f"<dt>{html.escape(code)}</dt><dd>{html.escape(name)} "
        f'<code title="SHA-256">{html.escape(digest)}</code></dd>'
        for name, code, digest in h.models
    )
    settings = "; ".join(f"{html.escape(k)} = {html.escape(v)}" for k, v in h.settings)
    return (
        "<header>\n<h1>xnetmap study</h1>\n<dl>"
        f"{models}"
        f"<dt>Settings</dt><dd>{settings}</dd></dl>\n</header>"
    )


def _html_table(b: Table) -> str:
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in b.header)
    rows = "\n".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows)
    ident = f' id="{html.escape(b.name)}"' if b.name else ""
    return (
        f'<table class="sortable"{ident}>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody>\n</table>"
    )


def _html_figure(b: Image, data: bytes | None, dpi: int) -> str:
    if data is None:
        src, size = html.escape(b.file), ""
    else:
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        w, h = png_size(data)
        # shown at the figure's physical size (96 CSS px per inch), sharp on high-DPI screens
        size = f' width="{round(w * 96 / dpi)}" height="{round(h * 96 / dpi)}"'
    links = ", ".join(
        f'<a href="{html.escape(f)}">{html.escape(f.rsplit(".", 1)[-1].upper())}</a>'
        for f in b.also
    )
    also = f" (also as {links})" if links else ""
    return (
        f'<figure><img src="{src}" alt="{html.escape(b.alt)}"{size}>'
        f"<figcaption>{html.escape(b.alt)}{also}</figcaption></figure>"
    )


def to_html(blocks, images: dict[str, bytes], title: str = "xnetmap study", dpi: int = 150) -> str:
    """A single HTML page; PNGs in ``images`` (file name -> bytes) are embedded as data URIs.

    ``dpi`` is the PNGs' resolution, used to show them at their physical size.
    """
    body = []
    for b in blocks:
        if isinstance(b, Header):
            body.append(_html_header(b))
            title = f"xnetmap study: {b.title}"
        elif isinstance(b, Heading):
            if b.level == 1 and any(isinstance(x, Header) for x in blocks):
                continue  # the header carries the page's title
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{html.escape(x)}</li>" for x in b.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Image):
            body.append(_html_figure(b, images.get(b.file), dpi))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_JS}</script>\n</body>\n</html>\n"
    )
