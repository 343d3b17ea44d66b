"""`xnetmap check` on the bundled zoo: pass, fail, fp16, swapped classes, policy, JUnit, drift."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_run import run_cli
from zoo_data import MODELS, fashion, write_npz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_check_models  # noqa: E402  (the README's own candidates, one definition)

REF = MODELS / "resnet_v2.onnx"
OTHER = MODELS / "inception.onnx"


def _run(*args) -> tuple[int, str]:
    return run_cli(*args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    xt, yt = fashion("train", 1200)
    xv, yv = fashion("test", 500, start=1000)
    return {
        "train": write_npz(root / "train.npz", xt, yt),
        "val": write_npz(root / "val.npz", xv, yv),
        "cache": root / "cache",
        "root": root,
    }


@pytest.fixture(scope="module")
def swapped(data):
    """The reference with classifier rows 0 and 6 swapped (T-shirt and Shirt change places)."""
    return make_check_models.swap_classes(REF, data["root"] / "swapped.onnx")


def _to_fp16(src, dst):
    """A float16 conversion as converters do it: fp16 weights and compute, float32 I/O."""
    return make_check_models.to_fp16(src, dst)


def test_model_against_itself_passes(data):
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q")
    assert code == 0, out
    assert "PASS  top1_agreement" in out and "100.00 %" in out
    assert out.strip().splitlines()[-1].startswith("PASS")


def test_fp16_conversion_passes_under_fp16_thresholds(data):
    fp16 = _to_fp16(REF, data["root"] / "resnet_fp16.onnx")
    code, out = _run("check", REF, fp16, "--val", data["val"], "--cache", data["cache"],
                     "--min-agreement", "99", "--max-acc-drop", "0.5", "--max-abs-diff", "0.1",
                     "-q")
    assert code == 0, out
    # ...and it is really different: fp16 outputs are not bit-identical.
    assert "max_abs_diff                 0 " not in out


def test_swapped_classifier_rows_fail_with_exit_1(data, swapped, tmp_path):
    junit = tmp_path / "check.xml"
    code, out = _run("check", REF, swapped, "--val", data["val"], "--cache", data["cache"],
                     "--junit", junit, "-q")
    assert code == 1, out
    assert "FAIL  top1_agreement" in out and "FAIL  acc_drop" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert {"top1_agreement", "acc_drop", "max_abs_diff", "mean_abs_diff"} <= set(cases)
    assert cases["top1_agreement"].find("failure") is not None
    assert cases["max_abs_diff"].find("failure") is None
    assert int(suite.get("failures")) == 2 and int(suite.get("tests")) == len(cases)


def test_different_families_map_gate_follows_thresholds(data, tmp_path):
    json_out = tmp_path / "r.json"
    common = ["check", REF, OTHER, "--val", data["val"], "--train", data["train"],
              "--cache", data["cache"], "-q", "--json", json_out]
    policy = tmp_path / "loose.toml"
    policy.write_text("[thresholds]\nmax_loss = 15.0\nmin_map_agreement = 80.0\n")
    code, out = _run(*common, "--policy", policy)
    assert code == 0, out
    result = json.loads(json_out.read_text())
    names = {m["name"]: m for m in result["metrics"]}
    assert {"loss_ref_to_cand", "loss_cand_to_ref", "cka"} <= set(names)
    assert "direct" in result["modes"] and "map" in result["modes"]
    # A threshold below the measured loss fails the same comparison.
    worst = max(names["loss_ref_to_cand"]["value"], names["loss_cand_to_ref"]["value"])
    code, out = _run(*common, "--max-loss", f"{worst - 0.5:.2f}")
    assert code == 1, out
    assert "FAIL  loss_" in out


def test_baseline_drift_is_detected(data, swapped, tmp_path):
    base = tmp_path / "baseline.json"
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q",
                     "--save-baseline", base)
    assert code == 0, out
    # The swapped candidate passes these lax gates but drifts from the baseline.
    code, out = _run("check", REF, swapped, "--val", data["val"], "--cache", data["cache"], "-q",
                     "--min-agreement", "0", "--max-acc-drop", "100", "--baseline", base)
    assert code == 1, out
    assert "FAIL  drift:top1_agreement" in out


@pytest.mark.parametrize(
    "policy_text, message",
    [("[thresholds]\nmin_agrement = 1\n", "unknown threshold"),
     ("[thresholds\n", "not valid TOML"),
     ("[thresholds]\nmax_loss = 'x'\n", "must be a number")],
)
def test_bad_policy_files_exit_2(data, tmp_path, policy_text, message):
    policy = tmp_path / "p.toml"
    policy.write_text(policy_text)
    code, out = _run("check", REF, REF, "--val", data["val"], "--policy", policy,
                     "--cache", data["cache"], "-q")
    assert code == 2 and message in out


def test_requested_gate_that_cannot_be_measured_fails(data, tmp_path):
    # --min-cka needs --train: an explicit gate must fail, not vanish into "all 0 gates passed".
    json_out = tmp_path / "r.json"
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q",
                     "--min-cka", "0.9", "--json", json_out)
    assert code == 1, out
    assert "FAIL  cka" in out and "not measured" in out
    cka = {m["name"]: m for m in json.loads(json_out.read_text())["metrics"]}["cka"]
    assert cka["value"] is None and cka["passed"] is False and "--train" in cka["description"]


def test_default_map_gates_without_train_are_only_noted(data):
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q")
    assert code == 0, out
    assert "skipped: no --train" in out and "not measured" not in out


def test_policy_records_explicit_thresholds(tmp_path):
    from xnetmap.check import load_policy

    assert load_policy().explicit == ()
    pol = load_policy(None, min_cka=0.9, max_loss=None)
    assert pol.explicit == ("min_cka",) and pol.max_loss is None
    assert "explicit" not in pol.thresholds()


def test_baseline_metric_missing_from_run_fails_drift(data, tmp_path):
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"schema": "xnetmap.check-baseline/1",
                                "metrics": {"top1_agreement": 100.0, "cka": 0.95}}))
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q",
                     "--baseline", base)
    assert code == 1, out
    assert "PASS  drift:top1_agreement" in out and "FAIL  drift:cka" in out
    base.write_text(json.dumps({"schema": "xnetmap.check-baseline/1", "metrics": {"cka": "x"}}))
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q",
                     "--baseline", base)
    assert code == 2 and "must be a number" in out


def test_unwritable_output_is_one_line_exit_2(data, tmp_path):
    # A user's bad output path is an input error, not an internal error with a traceback.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, out = _run("check", REF, REF, "--val", data["val"], "--cache", data["cache"], "-q",
                     "--junit", blocker / "j.xml")
    assert code == 2, out
    assert "cannot write" in out and "j.xml" in out and "Traceback" not in out

    from xnetmap.errors import InputError
    from xnetmap.fsutil import atomic_write_bytes

    with pytest.raises(InputError, match="choose another output path"):
        atomic_write_bytes(blocker / "sub" / "m.npz", b"data")


def test_check_fits_maps_like_run_study():
    # `check --device cuda` used to fit its maps on the CPU while run-study fitted on the GPU.
    from xnetmap.study.maps import map_fit_params
    from xnetmap.study.settings import StudySettings

    s = StudySettings(solver="lstsq", seed=3, fit={"epochs": 2})
    assert map_fit_params(s, "cuda") == {"solver": "lstsq", "seed": 3, "epochs": 2,
                                         "device": "cuda"}
    assert "device" not in map_fit_params(s, "cpu")


def test_a_check_that_gated_nothing_does_not_pass():
    from xnetmap.check import CheckResult, Metric, format_summary

    result = CheckResult("ref.onnx", "cand.onnx", [Metric("cka", 0.99)], ["map"], 10, False)
    assert result.passed is False
    assert format_summary(result).splitlines()[-1].startswith("FAIL: no gate was measured")
