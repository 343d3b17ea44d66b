"""`xnetmap demo`, the README's first command, end to end on the bundled zoo and data."""

from __future__ import annotations

import json

import onnx
from cli_run import run_cli
from zoo_data import MODELS


def _card(path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    return json.loads(next(p.value for p in model.metadata_props if p.key == "xnetmap.model_card"))


def test_demo_prints_table1_and_matches_the_model_cards(tmp_path):
    out = tmp_path / "demo"
    code, text = run_cli("demo", "-o", out, "-q")
    assert code == 0, text
    assert "ResNet-v2 to Inception  R → I" in text
    assert "Loss (points" in text and "Linear CKA" in text
    for name in ("report.md", "report.html", "report.json", "results.csv", "loss.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert len(report["models"]) == 5 and len(report["pairs"]) == 20
    # Native accuracy measured by xnetmap (C(F(x)) through onnxruntime) equals the
    # accuracy recorded on the 10,000 test images when the zoo was exported.
    by_path = {m["path"]: m for m in report["models"]}
    for path in sorted(MODELS.glob("*.onnx")):
        m = next(v for k, v in by_path.items() if k.endswith(path.name))
        assert m["n"] == 10_000
        assert m["correct"] == round(_card(path)["ort_test_acc"] * 10_000), path.name
