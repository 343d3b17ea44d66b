"""Table 1 in the paper's layout as a LaTeX ``table`` with booktabs rules (``table1.tex``).

The file is meant for ``\\input{table1.tex}`` in a paper whose preamble has
``\\usepackage{booktabs}``. Native rows (A → A) come first, then a rule, then the
ordered pairs, exactly as :func:`xnetmap.study.table.table1_rows` lists them.
"""

from __future__ import annotations

from xnetmap.study.table import ARROW, Study, table1_rows

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "−": "$-$",
    ARROW: r"$\rightarrow$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write → and − in math mode)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _number(cell: str) -> str:
    """A numeric cell with a typographic minus (``-1.4`` -> ``$-$1.4``)."""
    return "$-$" + cell[1:] if cell.startswith("-") else cell


def table1_latex(study: Study, label: str = "tab:xnetmap-table1") -> str:
    """LaTeX source of Table 1 (booktabs), ending in a newline.

    Raises InputError for a label-free study (Table 1 needs labels).
    """
    rows = table1_rows(study)
    natives = [r for r in rows if r.loss is None]
    pairs = [r for r in rows if r.loss is not None]
    val = next((d for d in study.datasets if d.role == "val"), None)
    n = rows[0].n if rows else 0
    where = f"{val.description} ({n:,} images)" if val else f"{n:,} validation images"
    caption = (
        f"Top-1 accuracy on {where} of each model's classifier on its own features "
        "(A → A) and on features mapped from another model (A → B). "
        "Loss = Acc(C_B(F_B)) − Acc(C_B(M F_A)) in points; a negative loss is a gain."
    )

    def line(r) -> str:
        d, m, c, p, loss = r.cells()
        cells = [latex_escape(d), latex_escape(m), c, _number(p), _number(loss)]
        return "    " + " & ".join(cells) + r" \\"

    out = [
        "% Table 1 of an xnetmap study; needs \\usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"  \centering",
        f"  \\caption{{{latex_escape(caption)}}}",
        f"  \\label{{{label}}}",
        r"  \begin{tabular}{llrrr}",
        r"    \toprule",
        r"    Description & Mapping & Correct & Percent & Loss \\",
        r"    \midrule",
        *(line(r) for r in natives),
    ]
    if pairs:
        out.append(r"    \midrule")
        out += [line(r) for r in pairs]
    out += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
