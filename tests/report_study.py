"""A hand-written Study for the report tests (no models run: every number is chosen here)."""

from __future__ import annotations

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
