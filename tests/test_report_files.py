"""write_reports: every file written, Table 1 in the Markdown, JSON schema, CSV, PNG, HTML."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from report_study import make_study

from xnetmap.report import write_reports

FIGURES = ("loss_forest", "loss", "agreement", "cka")


def test_two_models_report_files(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"])
    written = write_reports(study, tmp_path / "out")
    out = tmp_path / "out"
    figures = [f"{stem}.{ext}" for stem in FIGURES for ext in ("png", "svg", "pdf")]
    for name in ("report.md", "report.json", "results.csv", "report.html", "table1.tex", *figures):
        assert (out / name).is_file(), name
        assert written[name] == out / name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))

    md = (out / "report.md").read_text()
    # the paper's Table 1 layout, exactly: R->R 900, I->I 850, R->I = 850 + 10, I->R = 900 - 10
    table = (
        "| Description | Mapping | Correct | Percent | Loss |\n"
        "|---|---|---|---|---|\n"
        "| ResNet-S | R → R | 900 | 90.0 | |\n"
        "| Inception-S | I → I | 850 | 85.0 | |\n"
        "| ResNet-S to Inception-S | R → I | 860 | 86.0 | -1.0 |\n"
        "| Inception-S to ResNet-S | I → R | 890 | 89.0 | 1.0 |\n"
    )
    assert table in md
    assert "## Loss matrix" not in md  # two models: Table 1 only
    for needle in (
        "[-2.0, 0.0]",
        "0.22",
        "chi2-cc",
        "a1" * 32,
        "b2" * 32,
        "1" * 64,
        "xnetmap 0.1.0",
        "2026-11-25T10:00:00+00:00",
        "idx:fashion-mnist t10k",
        "| solver | gd |",
        "Linear CKA",
        "0.500",
    ):
        assert needle in md, needle

    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "xnetmap.study/1"
    assert set(rep) >= {
        "schema",
        "xnetmap_version",
        "created",
        "labelled",
        "head",
        "settings",
        "datasets",
        "models",
        "pairs",
        "matrices",
        "table1",
    }
    assert [m["code"] for m in rep["models"]] == ["R", "I"]
    p = rep["pairs"][0]
    assert (p["source"], p["target"], p["mapping"], p["correct"]) == (
        "ResNet-S",
        "Inception-S",
        "R → I",
        860,
    )
    assert p["loss"] == pytest.approx(-1.0) and p["loss_ci"] == pytest.approx([-2.0, 0.0])
    assert p["mcnemar"]["method"] == "chi2-cc" and p["fit"]["r2"] == 0.81
    assert rep["matrices"]["loss"][0][0] is None
    assert rep["matrices"]["loss"][0][1] == pytest.approx(-1.0)
    assert rep["matrices"]["cka"] == [[1.0, 0.5], [0.5, 1.0]]
    assert [r["correct"] for r in rep["table1"]] == [900, 850, 860, 890]

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kind"] for r in rows] == ["native", "native", "pair", "pair"]
    assert rows[2]["mapping"] == "R → I" and float(rows[2]["loss"]) == pytest.approx(-1.0)
    assert rows[0]["loss"] == "" and int(rows[3]["correct"]) == 890

    assert sorted(written) == sorted(
        ["report.md", "report.json", "results.csv", "report.html", "table1.tex", *figures]
    )
    for stem in FIGURES:
        with Image.open(out / f"{stem}.png") as im:
            im.load()
            assert im.format == "PNG" and min(im.size) > 300
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF-")
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:1000]

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "<td>ResNet-S to Inception-S</td>" in html and 'src="loss.png"' not in html


def test_three_models_matrices(tmp_path):
    study = make_study(["alpha", "beta", "gamma"])
    written = write_reports(study, tmp_path, formats=("png",))  # PNG only: no SVG/PDF, no links
    assert not any(name.endswith((".svg", ".pdf")) for name in written)
    assert ".svg" not in (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    assert "## Loss matrix (points)" in md and "## Agreement matrix" in md
    assert "| A \\ B | A | B | G |" in md
    assert "| A (alpha) | — | -1.0 | -2.0 |" in md  # alpha -> beta: 850 - 860
    assert "| alpha to gamma | A → G | 820 | 82.0 | -2.0 |" in md
    rep = json.loads((tmp_path / "report.json").read_text())
    assert np.array(rep["matrices"]["agreement"], dtype=float).shape == (3, 3)
    assert len(rep["pairs"]) == 6 and len(rep["table1"]) == 9
    with Image.open(tmp_path / "cka.png") as im:
        im.load()
        assert im.format == "PNG"


def test_label_free_report(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"], labelled=False)
    write_reports(study, tmp_path, formats=("png",))
    md = (tmp_path / "report.md").read_text()
    assert "The validation set has no labels" in md and "agreement only" in md
    assert "| Description | Mapping | Correct |" not in md
    assert "| ResNet-S to Inception-S | R → I | 90.0 |" in md
    assert not (tmp_path / "loss.png").exists() and (tmp_path / "agreement.png").exists()
    assert not (tmp_path / "loss_forest.png").exists() and not (tmp_path / "table1.tex").exists()
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["labelled"] is False and rep["table1"] == [] and rep["matrices"]["loss"] is None
    assert rep["pairs"][0]["correct"] is None and rep["pairs"][0]["mcnemar"] is None


def test_rewrite_is_identical(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"])
    write_reports(study, tmp_path)
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write_reports(study, tmp_path)
    assert first == {p.name: p.read_bytes() for p in tmp_path.iterdir()}


def test_json_round_trip(tmp_path):
    from xnetmap.errors import InputError
    from xnetmap.report.jsonreport import load_report, study_to_json

    for labelled in (True, False):
        study = make_study(["alpha", "beta", "gamma"], labelled=labelled)
        write_reports(study, tmp_path, formats=("png",))
        back = load_report(tmp_path / "report.json")
        assert back == study
        assert study_to_json(back) == (tmp_path / "report.json").read_text()
    (tmp_path / "bad.json").write_text('{"schema": "other/1"}')
    with pytest.raises(InputError, match="schema"):
        load_report(tmp_path / "bad.json")
