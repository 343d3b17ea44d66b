"""The split certificate: NaN is never equal to NaN, and peak memory stays near
one copy of the model's weights (the three models run one after another)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from cli_run import run_cli
from fixtures import onnx_models as fm
from onnx import TensorProto, helper, numpy_helper

from xnetmap.errors import VerificationFailed
from xnetmap.graph import split_model
from xnetmap.graph.certificate import compare_output


def test_compare_output_counts_nan_and_inf_as_different():
    a = np.array([[1.0, np.nan], [np.inf, 2.0]])
    same = compare_output(a, a.copy(), 1e-4, 1e-3)
    assert not same["within_tolerance"] and same["non_finite"] == 2
    assert same["max_abs_diff"] == 0.0  # the finite entries agree
    fine = compare_output(np.ones((2, 3)), np.ones((2, 3)) + 1e-6, 1e-4, 1e-3)
    assert fine["within_tolerance"] and fine["non_finite"] == 0
    off = compare_output(np.ones((2, 3)), np.ones((2, 2)), 1e-4, 1e-3)
    assert off["within_tolerance"] is False and "shape_mismatch" in off


def _nan_model(tmp_path):
    """resnet_gemm behind a Sqrt of the input: random normal inputs give NaN logits
    in the original and in C(F(x)) alike."""
    model = fm.resnet_gemm().model
    first = model.graph.node[0]
    first.input[0] = "sqrt_input"
    model.graph.node.insert(0, helper.make_node("Sqrt", ["input"], ["sqrt_input"], name="sq"))
    path = tmp_path / "nan.onnx"
    onnx.save(model, str(path))
    return path


def test_model_emitting_nan_never_gets_certificate_passed(tmp_path):
    path = _nan_model(tmp_path)
    with pytest.raises(VerificationFailed):
        split_model(path, tmp_path / "lib", samples=4)
    record = json.loads((tmp_path / "lib" / "nan.split.json").read_text())
    cert = record["certificate"]
    assert cert["passed"] is False and cert["non_finite"] > 0
    assert cert["outputs"]["logits"]["within_tolerance"] is False
    code, out = run_cli("split", path, "-o", tmp_path / "cli", "--samples", "4")
    assert code == 1 and "certificate FAILED" in out and "PASSED" not in out


def _big_weight_model(folder, n_bytes: int):
    """[N, 64] -> MatMul(W [64, K], external) -> ReduceMean to [N, 100] -> Relu -> Gemm."""
    k = n_bytes // (64 * 4) // 100 * 100
    rng = np.random.default_rng(0)
    with open(folder / "w.bin", "wb") as fh:
        for _ in range(64):
            fh.write((rng.standard_normal(k) * 0.01).astype(np.float32).tobytes())
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[64, k])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(64 * k * 4))):
        w.external_data.add(key=key, value=value)
    inits = [
        w,
        numpy_helper.from_array(np.array([0, k // 100, 100], np.int64), "S"),
        numpy_helper.from_array(rng.standard_normal((100, 10)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "B2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "S"], ["h3"], name="reshape"),
        helper.make_node("ReduceMean", ["h3"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("Relu", ["pooled"], ["feat"], name="relu"),
        helper.make_node("Gemm", ["feat", "W2", "B2"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path, 64 * k * 4


def _peak_rss_bytes(*args) -> int:
    """Peak resident memory of ``xnetmap ARGS`` in a fresh process (ru_maxrss, KiB)."""
    code = (
        "import resource, sys; from xnetmap.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def test_certificate_peak_memory_near_one_copy_of_the_weights(tmp_path):
    """Before: three sessions at once, each with a prepacked copy (2.9x the weights
    on a 2.2 GB model). Now the certificate adds at most ~1.5x the weights."""
    path, weights = _big_weight_model(tmp_path, 256 << 20)
    base = _peak_rss_bytes("split", path, "-o", tmp_path / "a", "--no-verify")
    full = _peak_rss_bytes("split", path, "-o", tmp_path / "b", "--samples", "8")
    assert full - base < 1.5 * weights, (base, full, weights)
