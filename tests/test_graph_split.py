"""split_model on every fixture head: the right cut, D, outputs, and C(F(x)) == model(x)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fixtures import onnx_models as fm

from xnetmap.errors import InputError, ModelRejected, UsageError, VerificationFailed
from xnetmap.graph import inspect_model, split_model
from xnetmap.graph.certificate import certify

CASES = [(f, cut) for f in fm.HEADS for cut in ("pooled", "penultimate")]


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every fixture saved once: name -> (Fixture, path)."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for make in fm.HEADS + [fm.no_head]:
        fx = make()
        path = folder / f"{fx.name}.onnx"
        fm.save(fx.model, path)
        out[fx.name] = (fx, path)
    return out


def test_fixture_library_covers_enough_heads():
    assert len(fm.HEADS) >= 12
    assert len({make().name for make in fm.HEADS}) == len(fm.HEADS)


@pytest.mark.parametrize("make,cut", CASES, ids=[f"{f.__name__}-{c}" for f, c in CASES])
def test_split_each_head(make, cut, built, tmp_path):
    fx, path = built[make().name]
    result = split_model(path, tmp_path, cut=cut, samples=3)
    want_tensor = fx.pooled if cut == "pooled" else fx.penultimate
    want_dim = fx.pooled_dim if cut == "pooled" else fx.penultimate_dim
    assert (result.cut_tensor, result.feature_dim) == (want_tensor, want_dim)
    assert result.logits_name == fx.logits
    assert list(result.output_names) == fx.outputs_in_c
    cert = result.certificate
    assert cert["passed"] and cert["top1_agreement"] == 1.0 and cert["samples"] == 3

    F = onnx.load(str(result.features_path))
    C = onnx.load(str(result.classifier_path))
    for part in (F, C):
        onnx.checker.check_model(part, full_check=True)
        assert part.ir_version == fx.model.ir_version
        assert list(part.opset_import) == list(fx.model.opset_import)
        meta = {p.key: p.value for p in part.metadata_props}
        assert meta["xnetmap.test"] == "1" and meta["xnetmap.source_sha256"] == result.model_sha256
    (f_out,) = F.graph.output
    assert f_out.name == "features"
    dims = f_out.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == want_dim  # dynamic batch kept
    assert [i.name for i in C.graph.input] == ["features"]
    assert C.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [o.name for o in C.graph.output] == fx.outputs_in_c

    original, f_sess, c_sess = (
        _session(p) for p in (path, result.features_path, result.classifier_path)
    )
    tol = 2e-2 if fx.name.startswith("fp16") else 1e-5
    for n in (1, 7):
        X = fm.make_input(fx, n, seed=n)
        want = original.run(fx.outputs_in_c, {"input": X})
        (feats,) = f_sess.run(None, {"input": X})
        assert feats.shape == (n, want_dim)
        got = c_sess.run(fx.outputs_in_c, {"features": feats})
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(
                a.astype(np.float64), b.astype(np.float64), atol=tol, rtol=tol
            )

    record = json.loads(result.json_path.read_text())
    assert record["feature_dim"] == want_dim and record["cut_tensor"] == want_tensor
    assert record["node_counts"]["features"] + record["node_counts"]["classifier"] >= 2
    assert record["certificate"]["passed"] is True
    # the export is deterministic: reuse compares a fresh split with the files byte for byte
    again = split_model(path, tmp_path / "again", cut=cut, verify=False)
    for a, b in (
        (result.features_path, again.features_path),
        (result.classifier_path, again.classifier_path),
    ):
        assert a.read_bytes() == b.read_bytes()


def test_pooled_and_penultimate_differ_for_multilayer_heads(built):
    differ = {fx.name for fx, _ in built.values() if fx.pooled and fx.pooled != fx.penultimate}
    assert {"vgg_two_layer", "mobilenetv3_hardswish", "vit_token_slice_ln"} <= differ


def test_aux_logits_main_output_chosen_and_aux_dropped(built, tmp_path):
    _, path = built["aux_logits"]
    result = split_model(path, tmp_path, verify=False)
    record = json.loads(result.json_path.read_text())
    assert result.logits_name == "logits" and record["dropped_outputs"] == ["aux_logits"]


def test_no_head_is_rejected_with_pointer_to_inspect(built, tmp_path):
    _, path = built["no_head"]
    with pytest.raises(ModelRejected) as err:
        split_model(path, tmp_path)
    assert "xnetmap inspect" in err.value.message and "--cut TENSOR" in err.value.message
    assert err.value.exit_code == 3


def test_cut_any_tensor_flattens_spatial_map(built, tmp_path):
    fx, path = built["no_head"]
    # the 1x1-conv "classifier" of the no-head model: cut before it, on a 4x4 map
    conv_in = next(
        n for n in fx.model.graph.node if n.op_type == "Conv" and n.attribute[0].ints == [1, 1]
    ).input[0]
    result = split_model(path, tmp_path, cut=conv_in, samples=2)
    assert result.feature_dim == 16 * 4 * 4 and result.certificate["passed"]


def test_bad_cut_name_lists_candidates(built, tmp_path):
    _, path = built["vgg_two_layer"]
    with pytest.raises(UsageError) as err:
        split_model(path, tmp_path, cut="no_such_tensor")
    assert err.value.exit_code == 2
    assert "no_such_tensor" in err.value.message and "hidden ['N', 24]" in err.value.message
    with pytest.raises(UsageError, match="graph input"):
        split_model(path, tmp_path, cut="input")
    with pytest.raises(UsageError, match="model output"):
        split_model(path, tmp_path, cut="logits")


def test_reuse_when_same_model_and_cut(built, tmp_path):
    _, path = built["resnet_gemm"]
    first = split_model(path, tmp_path, samples=2)
    stamp = first.features_path.stat().st_mtime_ns
    again = split_model(path, tmp_path, samples=2)
    assert again.features_path.stat().st_mtime_ns == stamp
    assert again.certificate == first.certificate
    other = split_model(path, tmp_path, cut="penultimate", samples=2)
    assert other.cut == "penultimate"


def test_reuse_never_hands_back_a_weaker_certificate(built, tmp_path):
    _, path = built["resnet_gemm"]
    first = split_model(path, tmp_path, samples=2)
    more = split_model(path, tmp_path, samples=5)
    assert first.certificate["samples"] == 2 and more.certificate["samples"] == 5
    fewer = split_model(path, tmp_path, samples=3)  # a 5-sample certificate covers 3
    assert fewer.certificate["samples"] == 5
    strict = split_model(path, tmp_path, samples=3, atol=1e-7, rtol=0.0)
    assert strict.certificate["atol"] == 1e-7 and strict.certificate["rtol"] == 0.0


@pytest.mark.parametrize("kw", [{"atol": -1.0}, {"rtol": float("nan")}])
def test_negative_or_nan_tolerance_is_a_usage_error(built, tmp_path, kw):
    _, path = built["resnet_gemm"]
    with pytest.raises(UsageError, match="must be a number >= 0"):
        split_model(path, tmp_path, samples=2, **kw)


def test_uncreatable_output_folder_is_an_input_error(built, tmp_path):
    _, path = built["resnet_gemm"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create output folder"):
        split_model(path, blocker / "sub", samples=2)


def test_unwritable_part_is_an_input_error(built, tmp_path):
    _, path = built["resnet_gemm"]
    blocked = tmp_path / f"{path.name[:-5]}.features.onnx"
    (blocked / "x").mkdir(parents=True)  # a folder where the part must go
    with pytest.raises(InputError, match="cannot write the split parts"):
        split_model(path, tmp_path, samples=2)


def test_certificate_fails_on_a_tampered_classifier(built, tmp_path):
    fx, path = built["resnet_gemm"]
    result = split_model(path, tmp_path, samples=4)
    C = onnx.load(str(result.classifier_path))
    bias = next(t for t in C.graph.initializer if len(t.dims) == 1 and t.dims[0] == 10)
    values = onnx.numpy_helper.to_array(bias).copy()
    values[3] += 0.01  # small enough to keep top-1 mostly, far outside fp32 tolerance
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    bad = tmp_path / "bad.classifier.onnx"
    onnx.save(C, str(bad))
    X = fm.make_input(fx, 4)
    cert = certify(
        path,
        result.features_path,
        bad,
        X,
        input_name="input",
        logits_name="logits",
        output_names=["logits"],
        atol=1e-4,
        rtol=1e-3,
    )
    assert not cert["passed"]
    assert cert["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)


def test_verification_failure_exit_1_and_recorded(built, tmp_path):
    _, path = built["fp16_resnet"]
    # fp16: C(F(x)) rounds the pooled features differently from the fused original
    result = split_model(path, tmp_path, samples=8)
    if result.certificate["max_abs_diff"] == 0:
        pytest.skip("this onnxruntime computes the fp16 split bit-exactly")
    with pytest.raises(VerificationFailed) as err:
        split_model(path, tmp_path / "strict", samples=8, atol=0.0, rtol=0.0)
    assert err.value.exit_code == 1
    record = json.loads((tmp_path / "strict" / "fp16_resnet.split.json").read_text())
    assert record["certificate"]["passed"] is False


def test_fp16_gets_looser_default_tolerance(built, tmp_path):
    _, path = built["fp16_resnet"]
    cert = split_model(path, tmp_path, samples=2).certificate
    assert cert["precision"] == "fp16" and cert["atol"] > 1e-3


def test_external_data_model_splits_with_names_xnetmap_chooses(tmp_path):
    fx = fm.resnet_gemm()
    src = tmp_path / "src"
    src.mkdir()
    fm.save(fx.model, src / "net.onnx", external=True)
    assert (src / "net.onnx.data").exists()
    out = tmp_path / "out"
    result = split_model(src / "net.onnx", out, samples=3)
    assert result.certificate["passed"]
    assert sorted(p.name for p in out.iterdir()) == [
        "net.classifier.onnx",
        "net.classifier.onnx.data",
        "net.features.onnx",
        "net.features.onnx.data",
        "net.split.json",
    ]
    for part, data in (
        (result.features_path, "net.features.onnx.data"),
        (result.classifier_path, "net.classifier.onnx.data"),
    ):
        proto = onnx.load(str(part), load_external_data=False)
        locations = {
            e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"
        }
        assert locations == {data}


def test_inspect_reports_head_and_cuts(built):
    _, path = built["mobilenetv3_hardswish"]
    info = inspect_model(path)
    assert info["head"]["logits"] == "logits" and info["head"]["affine_layers"] == 2
    assert info["cuts"]["pooled"] == {"tensor": "pool", "shape": ["N", 16, 1, 1], "D": 16}
    assert info["cuts"]["penultimate"]["D"] == 24
    assert info["inputs"] == [{"name": "input", "shape": ["N", 3, 8, 8], "dtype": "float32"}]
    assert info["parameters"] > 0 and info["opsets"] == {"ai.onnx": 17}
    json.dumps(info)
    _, path = built["no_head"]
    info = inspect_model(path)
    assert info["head"] is None and "no classifier head" in info["head_error"]
    assert info["candidates"]


def test_fixed_batch_model_certified_in_chunks(tmp_path):
    fx = fm.resnet_gemm()
    for vi in list(fx.model.graph.input) + list(fx.model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "fixed.onnx"
    fm.save(fx.model, path)
    result = split_model(path, tmp_path, samples=3)
    assert result.certificate["passed"] and result.certificate["samples"] == 3
    F = onnx.load(str(result.features_path))
    assert F.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_failed_certificate_is_never_reused(built, tmp_path):
    _, path = built["fp16_resnet"]
    try:
        split_model(path, tmp_path, samples=8, atol=0.0, rtol=0.0)
    except VerificationFailed:
        pass
    else:
        pytest.skip("this onnxruntime computes the fp16 split bit-exactly")
    result = split_model(path, tmp_path, verify=False)
    assert result.certificate is None  # redone, not the failed record


def test_cut_with_unknown_static_shape_is_measured(tmp_path):
    """A Reshape whose target comes from a non-constant, non-shape source: inference
    cannot tell the width; the split measures it with onnxruntime."""
    b = fm.Builder()
    pool = b.op("GlobalAveragePool", [b.stem("input")])
    # target = [-1] + (something data-dependent that is always 16): ReduceMax of ones * 16
    ones = b.op("Shape", [b.op("Relu", [pool])])
    width = b.op(
        "Mul",
        [
            b.op(
                "Div",
                [b.op("ReduceProd", [ones], keepdims=1), b.op("ReduceProd", [ones], keepdims=1)],
            ),
            b.const([16], np.int64),
        ],
    )
    target = b.op("Concat", [b.const([-1], np.int64), width], axis=0)
    flat = b.op("Reshape", [b.op("Sigmoid", [pool]), target], out="mystery")
    b.gemm(flat, 16, 10, out="logits")
    path = tmp_path / "m.onnx"
    fm.save(b.model(fm.NCHW, [("logits", ["N", 10])]), path)
    result = split_model(path, tmp_path, cut="mystery", samples=2)
    assert result.feature_dim == 16 and result.certificate["passed"]


def test_changed_external_weights_are_not_reused(tmp_path):
    fx = fm.resnet_gemm()
    fm.save(fx.model, tmp_path / "net.onnx", external=True)
    first = split_model(tmp_path / "net.onnx", tmp_path / "out", samples=2)
    data = tmp_path / "net.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[:4] = np.float32(3.0).tobytes()  # same size, new weights
    data.write_bytes(bytes(raw))
    second = split_model(tmp_path / "net.onnx", tmp_path / "out", samples=2)
    assert second.model_sha256 == first.model_sha256  # the .onnx file did not change
    record = json.loads(second.json_path.read_text())
    assert record["external_data"][0]["file"] == "net.onnx.data"
    assert record["external_data"][0]["mtime_ns"] == data.stat().st_mtime_ns


def test_removed_part_weights_are_not_reused(tmp_path):
    fx = fm.resnet_gemm()
    fm.save(fx.model, tmp_path / "net.onnx", external=True)
    first = split_model(tmp_path / "net.onnx", tmp_path / "out", samples=2)
    record = json.loads(first.json_path.read_text())
    assert set(record["data_files"]) == {"net.features.onnx.data", "net.classifier.onnx.data"}
    (tmp_path / "out" / "net.features.onnx.data").unlink()
    second = split_model(tmp_path / "net.onnx", tmp_path / "out", samples=2)
    assert (tmp_path / "out" / "net.features.onnx.data").is_file()  # written again
    assert second.certificate["passed"]


def test_inspect_shows_preprocess_metadata(tmp_path):
    fx = fm.resnet_gemm()
    spec = {"version": 1, "size": [8, 8], "resize": None, "crop": "none"}
    fx.model.metadata_props.add(key="xnetmap.preprocess", value=json.dumps(spec))
    fx.model.metadata_props.add(key="xnetmap.labels", value=json.dumps([str(i) for i in range(10)]))
    fm.save(fx.model, tmp_path / "m.onnx")
    info = inspect_model(tmp_path / "m.onnx")
    assert info["preprocess"] == spec and info["labels"] == 10
    result = split_model(tmp_path / "m.onnx", samples=2)  # default out_dir: the model's folder
    assert result.features_path.parent == tmp_path
    meta = {p.key: p.value for p in onnx.load(str(result.classifier_path)).metadata_props}
    assert json.loads(meta["xnetmap.preprocess"]) == spec


def test_fixed_batch_of_two_with_odd_samples(tmp_path):
    fx = fm.resnet_gemm()
    for vi in list(fx.model.graph.input) + list(fx.model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 2
    fm.save(fx.model, tmp_path / "two.onnx")
    result = split_model(tmp_path / "two.onnx", tmp_path, samples=3)
    assert result.certificate["passed"] and result.certificate["samples"] == 4


def test_many_samples_run_in_chunks(built, tmp_path):
    _, path = built["vit_token_gather"]
    cert = split_model(path, tmp_path, samples=19).certificate
    assert cert["passed"] and cert["samples"] == 19 and cert["feature_shape"] == [19, 16]


class _ParseCounter:
    """Counts onnx.load calls per file (patched in, so every caller is seen)."""

    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        real = onnx.load_model

        def counting(f, *args, **kwargs):
            self.paths.append(str(f))
            return real(f, *args, **kwargs)

        monkeypatch.setattr(onnx, "load", counting)
        monkeypatch.setattr(onnx, "load_model", counting)

    def count(self, path) -> int:
        return self.paths.count(str(path))


def test_split_parses_the_model_once_and_reuses_parts_byte_identical(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    fm.save(fm.resnet_gemm().model, path)
    parses = _ParseCounter(monkeypatch)
    first = split_model(path, tmp_path / "out")
    assert parses.count(path) == 1
    stamps = [p.stat().st_mtime_ns for p in (first.features_path, first.classifier_path)]
    again = split_model(path, tmp_path / "out")  # split afresh, compared, not rewritten
    assert parses.count(path) == 2 and again.certificate == first.certificate
    assert [p.stat().st_mtime_ns for p in (again.features_path, again.classifier_path)] == stamps
    fm.save(fm.vgg_two_layer().model, path)  # same file name, another model
    other = split_model(path, tmp_path / "out")
    assert other.feature_dim != first.feature_dim and other.certificate["passed"]


def test_split_model_proto_parses_nothing_and_leaves_the_model_alone(tmp_path, monkeypatch):
    from xnetmap.graph import load_model, split_model_proto
    from xnetmap.graph.index import GraphIndex

    fx = fm.resnet_gemm()
    for node in fx.model.graph.node:  # a tensor named like F's output: renamed inside parts
        node.output[:] = ["features" if o == "pool" else o for o in node.output]
        node.input[:] = ["features" if i == "pool" else i for i in node.input]
    path = tmp_path / "m.onnx"
    fm.save(fx.model, path, external=True)
    model = load_model(path, load_external_data=False)
    before = model.SerializeToString()
    parses = _ParseCounter(monkeypatch)
    sha = fm_sha256(path)
    result = split_model_proto(
        model, path, sha, tmp_path / "out", samples=2, index=GraphIndex.build(model)
    )
    assert parses.paths == [] and model.SerializeToString() == before
    assert result.cut_tensor == "features" and result.certificate["passed"]
    assert result.model_sha256 == sha


def fm_sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_surgery_keeps_external_tensors_as_lazy_references(tmp_path, monkeypatch):
    """graphsurgeon imports external initializers as lazy constants and exports their
    TensorProto unchanged: no weight is read while cutting."""
    import onnx_graphsurgeon as gs

    from xnetmap.graph.surgery import classifier_part, features_part

    fx = fm.resnet_gemm()
    fm.save(fx.model, tmp_path / "m.onnx", external=True)
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)

    def refuse(*_a, **_k):
        raise AssertionError("a weight was read")

    monkeypatch.setattr(gs.ir.tensor.LazyValues, "load", refuse)
    monkeypatch.setattr(onnx.numpy_helper, "to_array", refuse)
    F = features_part(model, "pool", 4, 16, onnx.TensorProto.FLOAT, "x")
    C = classifier_part(model, "pool", ["N", 16, 1, 1], 16, onnx.TensorProto.FLOAT, ["logits"], "x")
    source = {t.name: list(t.external_data) for t in model.graph.initializer}
    for part in (F, C):
        assert part.graph.initializer
        for t in part.graph.initializer:
            if t.name.startswith("xnetmap_cut_shape"):
                continue  # the restore Reshape's own small constant
            assert t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data
            assert list(t.external_data) == source[t.name]


def _bias_shifted(model: onnx.ModelProto, delta: float) -> onnx.ModelProto:
    """The same network with another classifier: the logits' bias shifted."""
    other = onnx.ModelProto()
    other.CopyFrom(model)
    gemm = next(n for n in other.graph.node if n.op_type == "Gemm")
    bias = next(t for t in other.graph.initializer if t.name == gemm.input[2])
    values = onnx.numpy_helper.to_array(bias) + np.float32(delta)
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    return other


def _logits_through_parts(result, X) -> np.ndarray:
    (feats,) = _session(result.features_path).run(None, {"input": X})
    return _session(result.classifier_path).run(["logits"], {"features": feats})[0]


def test_poisoned_classifier_with_updated_record_is_not_used(tmp_path):
    """Issue 11 case 8: the reference's classifier planted as the candidate's, its
    digest written into split.json: the split ignores both and cuts again."""
    candidate, reference = tmp_path / "cand.onnx", tmp_path / "ref.onnx"
    fx = fm.resnet_gemm()
    fm.save(fx.model, candidate)
    fm.save(_bias_shifted(fx.model, 5.0), reference)
    cache = tmp_path / "cache"
    split_model(candidate, cache, samples=2)
    ref = split_model(reference, tmp_path / "refsplit", samples=2)
    planted = cache / "cand.classifier.onnx"
    planted.write_bytes(ref.classifier_path.read_bytes())
    record = json.loads((cache / "cand.split.json").read_text())
    record["classifier_sha256"] = fm_sha256(planted)
    (cache / "cand.split.json").write_text(json.dumps(record))

    result = split_model(candidate, cache, samples=2)
    X = fm.make_input(fx, 4)
    (want,) = _session(candidate).run(["logits"], {"input": X})
    np.testing.assert_allclose(_logits_through_parts(result, X), want, rtol=1e-5, atol=1e-5)
    assert planted.read_bytes() != ref.classifier_path.read_bytes()
    assert json.loads(result.json_path.read_text())["classifier_sha256"] == fm_sha256(planted)
    assert result.certificate["passed"]


def test_rewritten_part_weights_are_not_used(tmp_path):
    fx = fm.resnet_gemm()
    fm.save(fx.model, tmp_path / "net.onnx", external=True)
    first = split_model(tmp_path / "net.onnx", tmp_path / "out", samples=2)
    data = tmp_path / "out" / "net.classifier.onnx.data"
    genuine = data.read_bytes()
    data.write_bytes(bytes(len(genuine)))  # same size, zero weights
    again = split_model(tmp_path / "net.onnx", tmp_path / "out", samples=2)
    assert data.read_bytes() == genuine and again.certificate == first.certificate


def test_planted_split_with_custom_op_never_reaches_onnxruntime(tmp_path):
    """Issue 11 case 9: a stranger's NAME.split.json + NAME.features.onnx (custom op,
    digests and a passed certificate recorded) next to the model are not used."""
    fx = fm.resnet_gemm()
    path = tmp_path / "net.onnx"
    fm.save(fx.model, path)
    evil = helper_model_with_custom_op()
    (tmp_path / "net.features.onnx").write_bytes(evil)
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (tmp_path / "net.classifier.onnx").symlink_to(outside)
    record = {
        "format": 1,
        "model_sha256": fm_sha256(path),
        "cut": "pooled",
        "features_sha256": hashlib_sha256(evil),
        "classifier_sha256": fm_sha256(outside),
        "certificate": {"passed": True, "samples": 100, "atol": 1.0, "rtol": 1.0},
    }
    (tmp_path / "net.split.json").write_text(json.dumps(record))
    result = split_model(path, tmp_path, samples=2)  # -o pointing at the model's folder
    F = onnx.load(str(result.features_path))
    assert {n.domain for n in F.graph.node} <= {"", "ai.onnx"}
    assert not result.classifier_path.is_symlink() and outside.read_text() == "not yours"
    assert result.certificate["samples"] == 2
    X = fm.make_input(fx, 3)
    (want,) = _session(path).run(["logits"], {"input": X})
    np.testing.assert_allclose(_logits_through_parts(result, X), want, rtol=1e-5, atol=1e-5)


def hashlib_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def helper_model_with_custom_op() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Steal", ["input"], ["features"], domain="com.evil")
    graph = helper.make_graph(
        [node],
        "evil",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 16])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)]
    )
    return model.SerializeToString()


@pytest.mark.parametrize(
    "data_name", ["net.features.onnx.data", "net.classifier.onnx.data", "net.split.json"]
)
def test_output_that_the_model_reads_is_refused(tmp_path, data_name):
    """Issue 11 case 10: never write where the model reads (exit 2, both paths named)."""
    from cli_run import run_cli

    fx = fm.resnet_gemm()
    path = tmp_path / "net.onnx"
    fm.save(fx.model, path, external=True, location=data_name)
    data = tmp_path / data_name
    before = data.read_bytes()
    with pytest.raises(UsageError) as err:
        split_model(path, samples=2)  # default output folder: the model's
    assert err.value.exit_code == 2
    assert str(data) in err.value.message and str(path) in err.value.message
    code, out = run_cli("split", path, "-o", tmp_path, "--samples", "2")
    assert code == 2 and "refusing to write" in out and "reads that file" in out
    assert data.read_bytes() == before
    assert split_model(path, tmp_path / "elsewhere", samples=2).certificate["passed"]


def test_weight_named_features_is_renamed_in_the_part_only(tmp_path):
    from xnetmap.graph import load_model, split_model_proto

    fx = fm.resnet_gemm()
    gemm = next(n for n in fx.model.graph.node if n.op_type == "Gemm")
    weight = next(t for t in fx.model.graph.initializer if t.name == gemm.input[1])
    weight.name = gemm.input[1] = "features"
    path = tmp_path / "m.onnx"
    fm.save(fx.model, path)
    model = load_model(path, load_external_data=False)
    before = model.SerializeToString()
    result = split_model_proto(model, path, fm_sha256(path), tmp_path / "out", samples=2)
    assert model.SerializeToString() == before and result.certificate["passed"]
    C = onnx.load(str(result.classifier_path))
    assert [i.name for i in C.graph.input] == ["features"]
    assert "features__xnetmap0" in {t.name for t in C.graph.initializer}


def test_certificate_on_images_reads_preprocessing_from_the_loaded_model(tmp_path, monkeypatch):
    from xnetmap.graph import load_model, split_model_proto

    path, images = fm.annotated_with_images(tmp_path, [(12, 9 + i) for i in range(3)])
    model = load_model(path, load_external_data=False)
    parses = _ParseCounter(monkeypatch)
    result = split_model_proto(
        model, path, fm_sha256(path), tmp_path / "out", samples=3, images=images
    )
    assert parses.paths == []
    assert result.certificate["passed"] and result.certificate["inputs"] == f"images from {images}"


def test_subgraph_reading_outer_tensors_before_the_cut(tmp_path):
    """An If whose branches read a tensor of the main graph (implicit input):
    graphsurgeon's cleanup and toposort keep the producer in F."""
    from onnx import helper

    b = fm.Builder()
    h = b.stem("input")
    cond = b.const(np.array(True), dtype=np.bool_)
    branches = {
        key: helper.make_graph(
            [helper.make_node(op, [h], [f"{key}_out"])],
            key,
            [],
            [helper.make_tensor_value_info(f"{key}_out", onnx.TensorProto.FLOAT, None)],
        )
        for key, op in (("then_branch", "Relu"), ("else_branch", "Sigmoid"))
    }
    b.nodes.append(helper.make_node("If", [cond], ["branch"], name="if", **branches))
    pool = b.op("GlobalAveragePool", ["branch"], out="pool")
    b.gemm(b.op("Flatten", [pool], axis=1), 16, 10, out="logits")
    fm.save(b.model(fm.NCHW, [("logits", ["N", 10])]), tmp_path / "if.onnx")
    result = split_model(tmp_path / "if.onnx", tmp_path / "out", samples=2)
    assert result.cut_tensor == "pool" and result.certificate["passed"]
    assert "If" in {n.op_type for n in onnx.load(str(result.features_path)).graph.node}
