"""CLI conventions: --help reads like other typer/rich CLIs, shows defaults and exit codes;
-V; ``check --json -``; --json on split and stitch; the split-name warning; --labels imagenet."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from cli_run import run_cli
from onnx import TensorProto, helper
from zoo_data import MODELS, fashion, write_npz

from xnetmap import cli
from xnetmap.graph.annotate import imagenet_class_names

COMMANDS = ["inspect", "split", "annotate", "extract", "fit", "run-study", "demo", "stitch",
            "check"]


def _help(*args) -> str:
    env = dict(os.environ, COLUMNS="200", TERM="dumb", NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "xnetmap", *args, "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_like_typer_and_ends_with_exit_codes(command):
    text = _help(command)
    assert "<bool>" not in text and "<str>" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage
    flat = " ".join(text.split())
    assert "Exit codes: 0 success" in flat and "5 internal error (a bug)" in flat


def test_every_option_shows_its_default():
    assert "[default: 20]" in _help("run-study") and "[default: 0.3]" in _help("run-study")
    check = _help("check")
    for flag in ("--min-agreement", "--max-acc-drop", "--max-loss", "--max-abs-diff", "--min-cka"):
        line = next(ln for ln in check.splitlines() if flag in ln)
        assert "[default:" in line, line
    assert "99 when no threshold is given" in " ".join(check.split())


def test_defaults_in_help_are_the_library_defaults():
    from xnetmap.check.policy import DEFAULT_THRESHOLDS
    from xnetmap.fit import AffineMap
    from xnetmap.study.settings import StudySettings

    assert cli._CHECK_DEFAULTS == DEFAULT_THRESHOLDS
    assert cli.BATCH_SIZE == StudySettings().batch_size
    init = inspect.signature(AffineMap.__init__).parameters
    assert cli.FIT_DEFAULTS == {k: init[k].default for k in cli.FIT_DEFAULTS}
    for command in ("extract", "run-study", "check"):
        line = next(ln for ln in _help(command).splitlines() if "--batch-size" in ln)
        assert f"[default: {cli.BATCH_SIZE}]" in line, line


def test_short_version_and_completion():
    from xnetmap import __version__

    assert run_cli("-V") == (0, f"xnetmap {__version__}\n")
    assert "--install-completion" in _help()


@pytest.fixture(scope="module")
def val_npz(tmp_path_factory):
    x, y = fashion("test", 120)
    return write_npz(tmp_path_factory.mktemp("conv") / "val.npz", x, y)


def test_check_json_dash_is_stdout_and_summary_goes_to_stderr(val_npz, tmp_path):
    ref = MODELS / "resnet_v2.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "xnetmap", "check", str(ref), str(ref), "--val", str(val_npz),
         "--cache", str(tmp_path / "cache"), "--json", "-"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] is True
    assert "PASS" in proc.stderr and "done in" in proc.stderr
    assert not (tmp_path / "-").exists()


def test_split_json(tmp_path):
    code, out = run_cli("split", MODELS / "vgg.onnx", "-o", tmp_path / "parts", "--json")
    assert code == 0, out
    rec = json.loads(out)
    assert rec["feature_dim"] == 128 and rec["certificate"]["passed"] is True
    assert (tmp_path / "parts" / "vgg.features.onnx").is_file()


def test_extract_warns_when_class_folders_are_split_names(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "ds" / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(
                tmp_path / "ds" / split / f"{i}.png")
    code, out = run_cli("extract", MODELS / "vgg.onnx", tmp_path / "ds", "-o", tmp_path / "st")
    assert code == 0, out
    assert re.search(r"warning: the class folders of .* are train, val", out), out
    code, out = run_cli("extract", MODELS / "vgg.onnx", tmp_path / "ds" / "train",
                        "-o", tmp_path / "st2")
    assert code == 0 and "warning" not in out, out


def _imagenet_shaped(path):
    """A real 1000-class classifier: global average pool then a linear head."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 1000], np.ones(3000, np.float32))
    nodes = [helper.make_node("ReduceMean", ["image"], ["f"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["f", "W"], ["logits"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_annotate_labels_imagenet(tmp_path):
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet tissue"
    model = _imagenet_shaped(tmp_path / "net.onnx")
    code, out = run_cli("annotate", model, "--preset", "imagenet", "--labels", "imagenet",
                        "-o", tmp_path / "labelled.onnx")
    assert code == 0, out
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "labelled.onnx")).metadata_props}
    assert json.loads(meta["xnetmap.labels"]) == names


@pytest.mark.parametrize("ci, says", [((-0.6, 0.1), True), ((0.2, 1.0), False),
                                      ((-1.2, -0.1), False)])
def test_pair_line_says_no_measurable_difference_when_the_interval_spans_0(ci, says):
    from types import SimpleNamespace

    study = SimpleNamespace(codes={"A": "A", "B": "B"})
    pair = SimpleNamespace(source="A", target="B", loss=sum(ci) / 2, loss_ci=ci, agreement=0.9,
                           mcnemar_p=0.3, cka=0.9, fit_cosine=0.98)
    assert ("no measurable difference" in cli._pair_line(study, pair)) is says
