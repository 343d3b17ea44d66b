"""write_reports: every file written, Table 1 in the Markdown, JSON schema, CSV, PNG, HTML."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from xnetmap.report import write_reports
from xnetmap.report.heatmap import cell_box, heatmap_size
from xnetmap.study.table import DatasetInfo, ModelResult, PairResult, Study


def make_study(names, labelled=True):
    """A hand-written study: native counts and pair counts chosen by the test."""
    n = 1000
    natives = {name: 900 - 50 * i for i, name in enumerate(names)}
    models = [
        ModelResult(
            name,
            n,
            correct=natives[name] if labelled else None,
            top5_correct=990 if labelled else None,
            sha256=f"{i:x}" * 64,
            feature_dim=64 * (i + 1),
            path=f"/zoo/{name}.onnx",
            cut="pooled",
        )
        for i, name in enumerate(names)
    ]
    pairs = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a == b:
                continue
            correct = natives[b] - 10 * (i - j) if labelled else None  # sign varies
            p = PairResult(
                a,
                b,
                n,
                agreement=0.9 - 0.01 * i,
                fit_cosine=0.97,
                fit_r2=0.81,
                cka=0.5 + 0.1 * min(i, j),
            )
            if labelled:
                p.correct = correct
                p.native_correct = natives[b]
                p.top5_correct = 985
                p.loss = 100 * (natives[b] - correct) / n
                p.loss_ci = (p.loss - 1.0, p.loss + 1.0)
                p.mcnemar_b, p.mcnemar_c = 30, 30 + 10 * (i - j)
                p.mcnemar_statistic, p.mcnemar_p, p.mcnemar_method = 1.5, 0.22, "chi2-cc"
            pairs.append(p)
    return Study(
        models,
        pairs,
        labelled=labelled,
        datasets=[
            DatasetInfo("train", "idx:fashion-mnist train", "a1" * 32, 20_000),
            DatasetInfo("val", "idx:fashion-mnist t10k", "b2" * 32, n),
        ],
        settings={"solver": "gd", "epochs": 3, "n_boot": 1000},
        created="2026-11-25T10:00:00+00:00",
    )


def test_two_models_report_files(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"])
    written = write_reports(study, tmp_path / "out")
    out = tmp_path / "out"
    for name in (
        "report.md",
        "report.json",
        "results.csv",
        "report.html",
        "loss.png",
        "agreement.png",
        "cka.png",
    ):
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

    for png in ("loss.png", "agreement.png", "cka.png"):
        with Image.open(out / png) as im:
            im.load()
            assert im.format == "PNG" and im.size == (274, 248) == heatmap_size(2)

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "<td>ResNet-S to Inception-S</td>" in html and 'src="loss.png"' not in html


def test_heatmap_cell_colours(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"])
    write_reports(study, tmp_path)
    with Image.open(tmp_path / "loss.png") as im:
        rgb = im.convert("RGB")
        corner = lambda i, j: rgb.getpixel((cell_box(i, j)[0] + 3, cell_box(i, j)[1] + 3))  # noqa: E731
        r, g, b = corner(0, 1)  # R -> I: loss -1.0, a gain: blue
        assert b > r + 50
        r, g, b = corner(1, 0)  # I -> R: loss +1.0: red
        assert r > b + 50
        assert corner(0, 0) == (225, 225, 225)  # diagonal: not measured


def test_three_models_matrices(tmp_path):
    study = make_study(["alpha", "beta", "gamma"])
    write_reports(study, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Loss matrix (points)" in md and "## Agreement matrix" in md
    assert "| A \\ B | A | B | G |" in md
    assert "| A (alpha) | — | -1.0 | -2.0 |" in md  # alpha -> beta: 850 - 860
    assert "| alpha to gamma | A → G | 820 | 82.0 | -2.0 |" in md
    rep = json.loads((tmp_path / "report.json").read_text())
    assert np.array(rep["matrices"]["agreement"], dtype=float).shape == (3, 3)
    assert len(rep["pairs"]) == 6 and len(rep["table1"]) == 9
    with Image.open(tmp_path / "cka.png") as im:
        assert im.size == heatmap_size(3) == (346, 320)


def test_label_free_report(tmp_path):
    study = make_study(["ResNet-S", "Inception-S"], labelled=False)
    write_reports(study, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "The validation set has no labels" in md and "agreement only" in md
    assert "| Description | Mapping | Correct |" not in md
    assert "| ResNet-S to Inception-S | R → I | 90.0 |" in md
    assert not (tmp_path / "loss.png").exists() and (tmp_path / "agreement.png").exists()
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
        write_reports(study, tmp_path)
        back = load_report(tmp_path / "report.json")
        assert back == study
        assert study_to_json(back) == (tmp_path / "report.json").read_text()
    (tmp_path / "bad.json").write_text('{"schema": "other/1"}')
    with pytest.raises(InputError, match="schema"):
        load_report(tmp_path / "bad.json")
