"""Figures (matplotlib), Table 1 as LaTeX, the HTML page's structure and the loss wording."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from report_study import make_study

from xnetmap.errors import UsageError
from xnetmap.report import loss_reading, write_reports
from xnetmap.report.content import build_blocks, finding
from xnetmap.report.figures import FigureOptions, figure_context, render_figures, study_figures
from xnetmap.report.forest import forest_rows
from xnetmap.report.heatmap import symmetric_limit
from xnetmap.report.latex import latex_escape, table1_latex
from xnetmap.report.render import to_html, to_markdown

LONG = [
    "efficientnet_lite0_imagenet",
    "ResNet-v2-152 (TF-slim)",
    "Inception-v4",
    "mobilenetv3_large_100.ra_in1k",
    "vit_small_patch16_224.augreg",
]


def _figs(study, **kw):
    with figure_context():
        return study_figures(study, FigureOptions(**kw))


def _image(fig):
    (ax, _cbar) = fig.axes
    return ax, ax.get_images()[0]


def test_loss_reading():
    assert loss_reading(None) == "" and loss_reading(float("nan"), (0, 1)) == ""
    assert loss_reading(-0.2, (-0.6, 0.1)) == "no measurable difference"  # the README's demo
    assert loss_reading(1.0, (0.0, 2.0)) == "no measurable difference"  # an end at 0 counts
    assert loss_reading(1.0, (0.2, 1.8)) == "loss"
    assert loss_reading(-1.0, (-1.8, -0.2)) == "gain"
    assert loss_reading(0.5) == "loss" and loss_reading(-0.5) == "gain"  # no interval: the sign
    assert loss_reading(0.0) == "no measurable difference"


def test_findings_say_no_measurable_difference():
    study = make_study(["ResNet-S", "Inception-S"])
    study.pairs[0].loss_ci = (-1.5, -0.5)  # R -> I: loss -1.0, interval below 0
    study.pairs[1].loss_ci = (-0.1, 2.1)  # I -> R: loss 1.0, interval contains 0
    assert finding(study, study.pairs[0]) == (
        "ResNet-S → Inception-S (R → I): a gain of 1.0 points "
        "(loss -1.0 points, 95 % CI [-1.5, -0.5])."
    )
    assert finding(study, study.pairs[1]) == (
        "Inception-S → ResNet-S (I → R): no measurable difference "
        "(loss 1.0 points, 95 % CI [-0.1, 2.1])."
    )
    md = to_markdown(build_blocks(study))
    assert "| I → R | 1.00 | [-0.1, 2.1] | no measurable difference |" in md
    assert "| R → I | -1.00 | [-1.5, -0.5] | gain |" in md


def test_loss_heatmap_diverging_centred_on_zero():
    study = make_study(["ResNet-S", "Inception-S", "VGG-S"])
    L = study.matrix("loss")
    ax, im = _image(_figs(study)["loss.png"])
    assert im.norm.vmin == -im.norm.vmax == -symmetric_limit(L) == -2.0  # max |loss| is 2.0
    cmap = im.get_cmap()
    r, g, b, _ = cmap(im.norm(1.0))
    assert r > b + 0.3  # a loss is red
    r, g, b, _ = cmap(im.norm(-1.0))
    assert b > r + 0.3  # a gain is blue
    assert np.allclose(cmap(im.norm(0.0))[:3], 1.0, atol=0.06)  # 0 is (near) white
    assert np.ma.getmaskarray(im.get_array()).diagonal().all()  # the diagonal is not coloured
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("—") == 3 and "\u22121.0" in texts and "2.0" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == study.names
    assert [t.get_text() for t in ax.get_yticklabels()] == study.names
    assert ax.get_xlabel().startswith("target B") and ax.get_ylabel().startswith("source A")

    ax, im = _image(_figs(study, loss_range=5.0)["loss.png"])
    assert (im.norm.vmin, im.norm.vmax) == (-5.0, 5.0)
    ax, im = _image(_figs(study, loss_range=1.0)["loss.png"])  # values beyond: arrows
    assert (im.norm.vmin, im.norm.vmax) == (-1.0, 1.0) and "2.0" in [t.get_text() for t in ax.texts]
    assert _figs(study, loss_range=1.0)["loss.png"].axes[1].get_label() == "<colorbar>"


def test_sequential_ranges_follow_the_data_or_are_fixed():
    study = make_study(["ResNet-S", "Inception-S", "VGG-S"])  # agreement 90, 89, 88 %
    figs = _figs(study)
    _, im = _image(figs["agreement.png"])
    assert (im.norm.vmin, im.norm.vmax) == pytest.approx((88.0, 90.0))
    _, im = _image(figs["cka.png"])
    assert (im.norm.vmin, im.norm.vmax) == pytest.approx((0.5, 0.6))  # off-diagonal only
    figs = _figs(study, agreement_range=(0, 100), cka_range=(0, 1))
    assert _image(figs["agreement.png"])[1].norm.vmax == 100
    assert _image(figs["cka.png"])[1].norm.vmin == 0


def test_forest_plot_ordered_by_loss():
    study = make_study(["ResNet-S", "Inception-S", "VGG-S"])
    for p in study.pairs:
        p.loss_ci = (p.loss - 0.5, p.loss + 0.5)
    study.pairs[0].loss_ci = (-1.2, 0.3)  # contains 0: the only open marker
    rows = forest_rows(study)
    assert [p.loss for p in rows] == sorted((p.loss for p in study.pairs), reverse=True)
    fig = _figs(study)["loss_forest.png"]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == f"{rows[0].source} → {rows[0].target}"  # the largest loss on top
    assert len(labels) == 6
    open_markers = [
        line for line in ax.get_lines() if line.get_marker() == "o" and line.get_mfc() == "white"
    ]
    assert len(open_markers) == 1
    lo, hi = ax.get_xlim()
    assert lo == -hi and hi >= 2.0
    assert _figs(study, loss_range=10)["loss_forest.png"].axes[0].get_xlim() == (-10, 10)


def test_no_text_outside_the_figure():
    """Long names: every label, number, title and colour-bar label lies inside the canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    for names in (LONG, ["A", "B"], [f"model_{i}" for i in range(9)]):
        for key, fig in _figs(make_study(names)).items():
            FigureCanvasAgg(fig).draw()
            renderer = fig.canvas.get_renderer()
            W, H = fig.bbox.width, fig.bbox.height
            for t in fig.findobj(Text):
                if not (t.get_visible() and t.get_text()):
                    continue
                e = t.get_window_extent(renderer)
                inside = e.x0 >= 0 and e.y0 >= 0 and e.x1 <= W and e.y1 <= H
                assert inside, (len(names), key, t.get_text(), e.bounds, (W, H))


def test_figure_files_are_byte_stable_and_leave_matplotlib_alone():
    import matplotlib

    pyplot_before = "matplotlib.pyplot" in sys.modules
    study = make_study(["ResNet-S", "Inception-S"])
    with matplotlib.rc_context({"font.size": 23, "axes.facecolor": "red"}):
        first = render_figures(study)
        assert matplotlib.rcParams["font.size"] == 23  # the caller's settings are back
    second = render_figures(study)
    assert first == second  # the caller's rcParams changed nothing either
    assert sorted(first) == sorted(
        f"{s}.{e}"
        for s in ("loss_forest", "loss", "agreement", "cka")
        for e in ("png", "svg", "pdf")
    )
    assert b"<dc:date>" not in first["loss.svg"] and b"/CreationDate" not in first["loss.pdf"]
    assert b"/FontFile2" in first["loss.pdf"]  # TrueType (Type 42) fonts, as journals ask
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_before


def test_ranges_are_validated(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"])
    for kw in ({"loss_range": 0}, {"loss_range": -1.0}, {"loss_range": math.nan}):
        with pytest.raises(UsageError, match="loss range"):
            write_reports(study, tmp_path, **kw)
    with pytest.raises(UsageError, match="agreement range"):
        write_reports(study, tmp_path, agreement_range=(90, 80))
    assert not list(tmp_path.iterdir())  # nothing written


def test_table1_latex():
    study = make_study(["ResNet_S", "Inception & co"])
    tex = table1_latex(study)
    assert tex.startswith("% Table 1") and tex.endswith("\\end{table}\n")
    body = tex[tex.index("\\toprule") : tex.index("\\bottomrule")]
    assert body == (
        "\\toprule\n"
        "    Description & Mapping & Correct & Percent & Loss \\\\\n"
        "    \\midrule\n"
        "    ResNet\\_S & R $\\rightarrow$ R & 900 & 90.0 &  \\\\\n"
        "    Inception \\& co & I $\\rightarrow$ I & 850 & 85.0 &  \\\\\n"
        "    \\midrule\n"
        "    ResNet\\_S to Inception \\& co & R $\\rightarrow$ I & 860 & 86.0 & $-$1.0 \\\\\n"
        "    Inception \\& co to ResNet\\_S & I $\\rightarrow$ R & 890 & 89.0 & 1.0 \\\\\n"
        "    "
    )
    assert "\\begin{tabular}{llrrr}" in tex and "idx:fashion-mnist t10k (1,000 images)" in tex
    assert latex_escape("a_b%c$d#e{f}~^\\") == (
        "a\\_b\\%c\\$d\\#e\\{f\\}\\textasciitilde{}\\textasciicircum{}\\textbackslash{}"
    )


def test_html_page_structure():
    study = make_study(LONG)
    blocks = build_blocks(study)
    page = to_html(blocks, {})
    assert page.count('<table class="sortable"') == page.count("<table") > 5
    assert page.count("<thead>") == page.count("<tbody>") == page.count("<table")
    assert "<script>" in page and "aria-sort" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    header = page[page.index("<header>") : page.index("</header>")]
    for m in study.models:
        assert m.name in header and m.sha256 in header
    assert "n_boot = 1000" in header
    assert 'href="loss_forest.svg"' in page and 'href="cka.pdf"' in page
    md = to_markdown(blocks)
    assert md.startswith("# xnetmap study\n\n**Models:** E = efficientnet_lite0_imagenet")
    assert "![Loss matrix" in md and "[PDF](loss.pdf)" in md and "table1.tex" in md
