"""Table 1: planted counts through the evaluation helpers, arithmetic, codes, layout."""

from __future__ import annotations

import numpy as np
import pytest

from xnetmap.errors import InputError
from xnetmap.report import format_matrix, format_table1
from xnetmap.study.evaluate import native_result, pair_result
from xnetmap.study.table import ModelResult, PairResult, Study, short_codes, table1_rows

N = 50_000
I_NAME, R_NAME = "Inception-v4", "ResNet-v2 152"


def logits_with_correct(y, n_correct, n_classes, rng):
    """Logits that are right on exactly n_correct random samples."""
    n = len(y)
    right = np.zeros(n, bool)
    right[rng.choice(n, n_correct, replace=False)] = True
    L = rng.normal(size=(n, n_classes)).astype(np.float32)
    top = np.where(right, y, (y + 1 + rng.integers(0, n_classes - 1, n)) % n_classes)
    L[np.arange(n), top] = 10.0
    return L, right


@pytest.fixture(scope="module")
def paper():
    """The paper's Table 1 counts, planted on 50,000 samples with 20 classes."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, N)
    LI, rI = logits_with_correct(y, 40_037, 20, rng)
    LR, rR = logits_with_correct(y, 39_022, 20, rng)
    LIR, rIR = logits_with_correct(y, 39_686, 20, rng)  # C_R(M_{I->R} F_I)
    LRI, rRI = logits_with_correct(y, 37_866, 20, rng)  # C_I(M_{R->I} F_R)
    models = [native_result(I_NAME, LI, y), native_result(R_NAME, LR, y)]
    pairs = [
        pair_result(I_NAME, R_NAME, LR, LIR, y, n_boot=200),
        pair_result(R_NAME, I_NAME, LI, LRI, y, n_boot=200),
    ]
    study = Study(models, pairs, created="2026-01-01T00:00:00+00:00")
    return study, dict(y=y, LI=LI, LR=LR, LIR=LIR, LRI=LRI, rR=rR, rIR=rIR)


def test_table1_rows_arithmetic(paper):
    study, _ = paper
    rows = table1_rows(study)
    assert [r.cells() for r in rows] == [
        ("Inception-v4", "I → I", "40,037", f"{100 * 40_037 / N:.1f}", ""),
        ("ResNet-v2 152", "R → R", "39,022", f"{100 * 39_022 / N:.1f}", ""),
        ("Inception-v4 to ResNet-v2 152", "I → R", "39,686", "79.4", "-1.3"),
        ("ResNet-v2 152 to Inception-v4", "R → I", "37,866", "75.7", "4.3"),
    ]
    # loss from counts (the paper printed differences of rounded percents: -1.4 and 4.5)
    assert rows[2].loss == pytest.approx(100 * (39_022 - 39_686) / N)
    assert rows[3].loss == pytest.approx(100 * (40_037 - 37_866) / N)
    assert rows[0].loss is None


def test_pair_statistics_match_independent_counts(paper):
    study, a = paper
    p = study.pair(I_NAME, R_NAME)
    assert p.native_correct == 39_022 and p.correct == 39_686
    assert p.mcnemar_b == int(np.sum(a["rR"] & ~a["rIR"]))
    assert p.mcnemar_c == int(np.sum(~a["rR"] & a["rIR"]))
    assert p.mcnemar_method == "chi2-cc" and p.mcnemar_p < 1e-3
    agree = np.mean(np.argmax(a["LR"], 1) == np.argmax(a["LIR"], 1))
    assert p.agreement == pytest.approx(agree)
    lo, hi = p.loss_ci
    assert lo < p.loss < hi < 0  # a clear gain
    top5 = np.mean((np.argsort(-a["LIR"], axis=1)[:, :5] == a["y"][:, None]).any(axis=1))
    assert p.top5_percent == pytest.approx(100 * top5)


def test_format_table1_fixed_width(paper):
    study, _ = paper
    text = format_table1(study)
    lines = text.splitlines()
    assert lines[0].split() == ["Description", "Mapping", "Correct", "Percent", "Loss"]
    assert lines[4].startswith("Inception-v4 to ResNet-v2 152  I → R")
    assert lines[4].rstrip().endswith("39,686     79.4  -1.3")
    assert lines[5].rstrip().endswith("37,866     75.7   4.3")
    # numbers right-aligned: every row ends its Percent column at the same position
    ends = {ln.index(".", len("Description") + 30) for ln in lines[2:]}
    assert len(ends) == 1
    mat = format_matrix(study, "loss")
    assert "-1.3" in mat.splitlines()[3] and "4.3" in mat.splitlines()[4]


def test_matrix_orientation_rows_are_sources(paper):
    study, _ = paper
    M = study.matrix("loss")
    assert np.isnan(M[0, 0]) and np.isnan(M[1, 1])
    assert M[0, 1] == pytest.approx(-1.328)  # I (row) -> R (column)
    assert M[1, 0] == pytest.approx(4.342)


def test_short_codes():
    assert short_codes([I_NAME, R_NAME]) == {I_NAME: "I", R_NAME: "R"}
    assert short_codes(["resnet_small", "resnet_large", "inception"]) == {
        "resnet_small": "RS",
        "resnet_large": "RL",
        "inception": "I",
    }
    codes = short_codes(["net", "Net", "vgg"])
    assert codes["vgg"] == "V" and len(set(codes.values())) == 3


def test_label_free_study():
    rng = np.random.default_rng(1)
    L = rng.normal(size=(100, 4))
    models = [native_result("a", L), native_result("b", L)]
    pairs = [pair_result("a", "b", L, L + 0.01 * rng.normal(size=L.shape))]
    study = Study(models, pairs, labelled=False)
    assert models[0].correct is None and pairs[0].loss is None and pairs[0].correct is None
    assert 0.9 < pairs[0].agreement <= 1.0
    with pytest.raises(InputError, match="label-free"):
        table1_rows(study)
    assert "no labels" in format_table1(study)


def test_study_validation():
    m = [ModelResult("a", 10), ModelResult("b", 10)]
    with pytest.raises(InputError, match="unique"):
        Study([ModelResult("a", 10), ModelResult("a", 10)], [])
    with pytest.raises(InputError, match="not in the study"):
        Study(m, [PairResult("a", "c", 10)])
    with pytest.raises(InputError, match="same shape"):
        pair_result("a", "b", np.zeros((3, 2)), np.zeros((4, 2)))
