"""`xnetmap annotate` through the real CLI entry point, and metadata round trips."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from xnetmap.cli import main
from xnetmap.data import PRESETS, PreprocessSpec
from xnetmap.errors import UsageError
from xnetmap.graph import annotate_model, model_preprocess


def _classifier(path, shape=("N", 3, 224, 224), classes=4, meta=None):
    """A real, checker-valid classifier: global average pool then a linear head."""
    c = shape[1] if shape[1] in (1, 3) else shape[3]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    w = helper.make_tensor("W", TensorProto.FLOAT, [c, classes],
                           np.ones(c * classes, np.float32))
    nodes = [helper.make_node("ReduceMean", ["image"], ["f"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["f", "W"], ["logits"])]
    g = helper.make_graph(nodes, "g", [x], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)
    return path


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _meta(path):
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_annotate_preset_and_labels_round_trip(tmp_path, capsys):
    src = _classifier(tmp_path / "m.onnx", meta={"author": "me"})
    (tmp_path / "names.txt").write_text("ant\nbee\ncat\ndog\n")
    code, out, err = _run(["annotate", str(src), "--preset", "imagenet", "--labels",
                           str(tmp_path / "names.txt"), "-o", str(tmp_path / "a.onnx")], capsys)
    assert code == 0, err
    assert "a.onnx" in out and "resize=256" in out and "4 classes" in out
    meta = _meta(tmp_path / "a.onnx")
    assert meta["author"] == "me"
    assert json.loads(meta["xnetmap.labels"]) == ["ant", "bee", "cat", "dog"]
    assert PreprocessSpec.from_json(meta["xnetmap.preprocess"]) == PRESETS["imagenet"]
    spec, notes = model_preprocess(tmp_path / "a.onnx")
    assert spec == PRESETS["imagenet"] and notes == []
    assert "xnetmap.preprocess" not in _meta(src)  # the source is untouched
    # The graph itself is unchanged.
    assert onnx.load(tmp_path / "a.onnx").graph == onnx.load(src).graph


def test_annotate_flags_override_and_in_place(tmp_path, capsys):
    src = _classifier(tmp_path / "m.onnx", shape=("N", 1, 28, 28), classes=10)
    code, out, err = _run(["annotate", str(src), "--in-place", "--mean", "0.2860",
                           "--std", "0.3530", "--scale", "1/255"], capsys)
    assert code == 0, err
    assert "assumed" in err  # the user is told what was inferred from the input shape
    spec = PreprocessSpec.from_json(_meta(src)["xnetmap.preprocess"])
    assert spec == PreprocessSpec(size=(28, 28), resize=None, crop="none", colour="L",
                                  channel_order="RGB", layout="NCHW", scale=1 / 255,
                                  mean=[0.2860], std=[0.3530])
    # A second annotation keeps the stored spec and changes only what is asked.
    code, _, err = _run(["annotate", str(src), "--in-place", "--interpolation", "bicubic"],
                        capsys)
    assert code == 0 and err == ""
    spec2 = PreprocessSpec.from_json(_meta(src)["xnetmap.preprocess"])
    assert spec2 == spec.replace(interpolation="bicubic")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--preset", "imagenet"], 2, "-o OUT.onnx"),
        (["--preset", "vgg", "-o", "OUT"], 2, "unknown preset"),
        (["--size", "abc", "-o", "OUT"], 2, "--size"),
        (["--layout", "NCWH", "-o", "OUT"], 2, "layout"),
        (["--labels", "NAMES3", "-o", "OUT"], 2, "3 class names"),
        (["--labels", "MISSING", "-o", "OUT"], 2, "does not exist"),
        (["-o", "OUT", "--in-place"], 2, "not both"),
    ],
)
def test_annotate_bad_input_exit_codes(tmp_path, capsys, args, code, message):
    src = _classifier(tmp_path / "m.onnx")
    (tmp_path / "n3.txt").write_text("a\nb\nc\n")
    subst = {"OUT": str(tmp_path / "o.onnx"), "NAMES3": str(tmp_path / "n3.txt"),
             "MISSING": str(tmp_path / "missing.txt")}
    got, out, err = _run(["annotate", str(src)] + [subst.get(a, a) for a in args], capsys)
    assert got == code and message in err
    assert not (tmp_path / "o.onnx").exists()


def test_annotate_missing_and_garbage_models(tmp_path, capsys):
    code, _, err = _run(["annotate", str(tmp_path / "none.onnx"), "--in-place"], capsys)
    assert code == 2 and "none.onnx" in err
    (tmp_path / "g.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    code, _, err = _run(["annotate", str(tmp_path / "g.onnx"), "--in-place"], capsys)
    assert code == 3 and "g.onnx" in err


def test_annotate_unwritable_output_exit_2(tmp_path, capsys):
    src = _classifier(tmp_path / "m.onnx")
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    for out, message in ((tmp_path / "file" / "o.onnx", "cannot write"),
                         (tmp_path / "folder", "is a folder")):
        code, _, err = _run(["annotate", str(src), "--preset", "imagenet", "-o", str(out)],
                            capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert list((tmp_path / "folder").iterdir()) == []


def test_annotate_model_library_call(tmp_path):
    src = _classifier(tmp_path / "m.onnx", shape=("N", 299, 299, 3))
    result = annotate_model(src, tmp_path / "o.onnx", preset="inception", labels=list("abcd"))
    assert result["preprocess"]["layout"] == "NHWC" and result["labels"] == list("abcd")
    assert any("NHWC" in n for n in result["notes"])
    with pytest.raises(UsageError):
        annotate_model(src)
