"""Safe loading: garbage, truncation, versions, custom ops and every unsafe external-data case.

Unsafe cases point a tensor at a sentinel file outside the model's folder whose
bytes must never be read: its access time is set in the past and must not
move, and its content must appear in no error message.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from fixtures import onnx_models as fm

from xnetmap.cli import main
from xnetmap.errors import InputError, ModelRejected
from xnetmap.graph import file_sha256, load_model

SENTINEL = b"XNETMAP-SENTINEL-SECRET!" * 4  # 96 bytes = 24 float32


def _tiny() -> onnx.ModelProto:
    """One MatMul whose [4, 6] float32 weight (96 bytes) lives in external data."""
    b = fm.Builder()
    w = b.weight(4, 6)
    b.op("MatMul", ["input", w], out="logits")
    return b.model([("input", ["N", 4])], [("logits", ["N", 6])])


def _with_location(folder, location: str, **extra) -> os.PathLike:
    """Save the tiny model in ``folder`` with its weight at ``location`` (not written)."""
    model = _tiny()
    (tensor,) = model.graph.initializer
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "96", **extra}.items():
        tensor.external_data.add(key=key, value=str(value))
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def layout(tmp_path):
    """tmp/model/ (the model's folder) and tmp/secret/sentinel.bin (outside it)."""
    model_dir, secret = tmp_path / "model", tmp_path / "secret"
    model_dir.mkdir()
    secret.mkdir()
    sentinel = secret / "sentinel.bin"
    sentinel.write_bytes(SENTINEL)
    st = sentinel.stat()
    os.utime(sentinel, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))  # atime < mtime
    return model_dir, sentinel


def _atime_works(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    st = probe.stat()
    os.utime(probe, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    before = probe.stat().st_atime_ns
    probe.read_bytes()
    return probe.stat().st_atime_ns != before


def _hardlink(model_dir, sentinel):
    os.link(sentinel, model_dir / "w.bin")
    return "w.bin"


def _symlink(model_dir, sentinel):
    os.symlink(sentinel, model_dir / "w.bin")
    return "w.bin"


def _symlinked_folder(model_dir, sentinel):
    os.symlink(sentinel.parent, model_dir / "sub")
    return "sub/sentinel.bin"


UNSAFE = {
    "absolute": (lambda d, s: str(s), "absolute"),
    "dotdot": (lambda d, s: "../secret/sentinel.bin", "'..'"),
    "dotdot_inside": (lambda d, s: "a/../../secret/sentinel.bin", "'..'"),
    "backslash_dotdot": (lambda d, s: "..\\secret\\sentinel.bin", "'..'"),
    "symlink": (_symlink, "symbolic link"),
    "symlinked_folder": (_symlinked_folder, "symbolic link"),
    "hardlink": (_hardlink, "hardlink"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_external_data_refused_and_sentinel_never_read(case, layout, tmp_path, capsys):
    model_dir, sentinel = layout
    make_location, why = UNSAFE[case]
    path = _with_location(model_dir, make_location(model_dir, sentinel))
    atime = sentinel.stat().st_atime_ns
    with pytest.raises(ModelRejected) as err:
        load_model(path)
    assert why in err.value.message and err.value.exit_code == 3
    with pytest.raises(SystemExit) as code:
        main(["split", str(path), "-o", str(tmp_path / "out")])
    assert code.value.code == 3
    captured = capsys.readouterr()
    assert "refusing external data" in captured.err
    for text in (err.value.message, captured.out, captured.err):
        assert SENTINEL[:24].decode() not in text
    if _atime_works(tmp_path):
        assert sentinel.stat().st_atime_ns == atime, "the sentinel was read"
    assert not (tmp_path / "out" / "model.features.onnx").exists()


@pytest.mark.parametrize(
    "extra,why",
    [
        ({"offset": "8"}, "beyond the end"),
        ({"length": "200"}, "beyond the end"),
        ({"offset": "-1"}, "negative"),
        ({"offset": "abc"}, "not an integer"),
    ],
)
def test_offset_length_beyond_file_refused(extra, why, tmp_path):
    (tmp_path / "w.bin").write_bytes(np.zeros(24, np.float32).tobytes())
    path = _with_location(tmp_path, "w.bin", **extra)
    with pytest.raises(ModelRejected, match=why):
        load_model(path)


def test_length_must_match_tensor(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.zeros(30, np.float32).tobytes())
    path = _with_location(tmp_path, "w.bin", length="120")
    with pytest.raises(ModelRejected, match="needs 96"):
        load_model(path)


def test_missing_data_file_is_named(tmp_path):
    path = _with_location(tmp_path, "weights/w.bin")
    with pytest.raises(ModelRejected, match=r"'weights/w.bin'.*missing"):
        load_model(path)


def test_safe_external_data_in_subfolder_loads(tmp_path):
    (tmp_path / "weights").mkdir()
    value = np.arange(24, dtype=np.float32)
    (tmp_path / "weights" / "w.bin").write_bytes(b"\0" * 4 + value.tobytes())
    path = _with_location(tmp_path, "weights/w.bin", offset="4")
    model = load_model(path)
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(model.graph.initializer[0]).reshape(-1), value
    )
    lazy = load_model(path, load_external_data=False)
    assert lazy.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL


def test_missing_path_and_folder_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(InputError, match="folder"):
        load_model(tmp_path)


@pytest.fixture
def good_bytes():
    return fm.resnet_gemm().model.SerializeToString()


@pytest.mark.parametrize(
    "content,match",
    [
        (lambda good: b"", "empty"),
        (lambda good: good[: len(good) // 2], "not a valid ONNX model"),
        (lambda good: good[:-7], "not a valid ONNX model"),
        (lambda good: np.random.default_rng(0).bytes(4096), "not a valid ONNX model"),
        (lambda good: b"hello, I am a text file\n" * 20, "not a valid ONNX model"),
        (lambda good: onnx.ModelProto(ir_version=8).SerializeToString(), "no graph"),
    ],
    ids=["empty", "half", "truncated", "random", "text", "no_graph"],
)
def test_garbage_is_rejected(content, match, good_bytes, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(content(good_bytes))
    with pytest.raises(ModelRejected, match=match) as err:
        load_model(path)
    assert err.value.exit_code == 3


def _edited(tmp_path, edit) -> os.PathLike:
    model = fm.resnet_gemm().model
    edit(model)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_too_new_opset_reported_plainly(tmp_path):
    def edit(m):
        m.opset_import[0].version = 99

    with pytest.raises(ModelRejected, match="opset 99 is newer"):
        load_model(_edited(tmp_path, edit))


def test_too_old_opset_reported(tmp_path):
    def edit(m):
        m.opset_import[0].version = 5

    with pytest.raises(ModelRejected, match="opset 5 is older"):
        load_model(_edited(tmp_path, edit))


def test_custom_domain_operator_reported_plainly(tmp_path):
    def edit(m):
        m.graph.node[1].domain = "com.example"
        m.opset_import.add(domain="com.example", version=1)

    with pytest.raises(ModelRejected, match=r"custom-domain operators.*com\.example\.Relu"):
        load_model(_edited(tmp_path, edit))


def test_checker_failure_rejected(tmp_path):
    def edit(m):
        m.graph.node[1].op_type = "NoSuchOperator"

    with pytest.raises(ModelRejected, match="onnx.checker"):
        load_model(_edited(tmp_path, edit))


def test_file_sha256_matches_hashlib(tmp_path, good_bytes):
    import hashlib

    path = tmp_path / "m.onnx"
    path.write_bytes(good_bytes)
    assert file_sha256(path) == hashlib.sha256(good_bytes).hexdigest()


# ---- hardening: every bad input is a one-line refusal, never a traceback (issue 12) ----


def _cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as code:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code.value.code, text


def _both_commands(capsys, path, tmp_path) -> list[tuple[int, str]]:
    return [
        _cli(capsys, "inspect", path),
        _cli(capsys, "split", path, "-o", tmp_path / "out", "--samples", "2"),
    ]


def test_location_not_utf8_refused_by_inspect_and_split(tmp_path, capsys):
    path = _with_location(tmp_path, "PLACEHOLDER.bin")
    path.write_bytes(path.read_bytes().replace(b"PLACEHOLDER.bin", b"\xff\xfe\xfd-invalid.bin"))
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3
        assert "refusing external data of tensor 'w1'" in text and "not valid UTF-8" in text


@pytest.mark.parametrize("where", ["output", "input"])
def test_unknown_element_type_refused(where, tmp_path, capsys):
    def edit(m):
        getattr(m.graph, where)[0].type.tensor_type.elem_type = 999

    path = _edited(tmp_path, edit)
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3
        assert f"graph {where}" in text and "element type 999" in text


def _input_dims(dims):
    def edit(m):
        shape = m.graph.input[0].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            if isinstance(d, str):
                shape.dim.add().dim_param = d
            else:
                shape.dim.add().dim_value = d

    return edit


@pytest.mark.parametrize(
    "dims,words",
    [
        ([1] * 10000, ["rank 10000", "at most 64 dims"]),
        (["N", 100000, 100000], ["[N, 100000, 100000]", "1e+10 elements"]),
        (["N", 3, 2**31 - 1, 8], ["2147483647", "over xnetmap's limit"]),
        (["N", 2**62, 8, 8], ["4611686018427387904", "over xnetmap's limit"]),
        ([10**9, 3, 8, 8], ["[1000000000, 3, 8, 8]", "over xnetmap's limit"]),
        (["N", "C", "H", "W", "D"], ["[N, C, H, W, D]", "symbolic dims taken as 224"]),
    ],
    ids=["rank10000", "1e5x1e5", "int32max", "2pow62", "batch1e9", "symbolic5d"],
)
def test_oversized_input_refused_before_allocating(dims, words, tmp_path, capsys):
    """Refused at load (exit 3, input and shape named): nothing is allocated, so a
    1e9 batch costs no memory (the certificate used to build it: 4.9 GB)."""
    import resource

    path = _edited(tmp_path, _input_dims(dims))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelRejected) as err:
        load_model(path)
    assert "input 'input'" in err.value.message
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3 and "input 'input'" in text
        for word in words:
            assert word in text
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_random_inputs_refuse_what_they_cannot_build():
    from xnetmap.graph.certificate import random_inputs

    with pytest.raises(ModelRejected, match="over xnetmap's limit"):
        random_inputs(np.float32, ["N", 3, 4096, 4096], 8)
    with pytest.raises(ModelRejected, match="rank 70"):
        random_inputs(np.float32, [1] * 70, 1)
    X, notes = random_inputs(np.float16, ["N", 3, "H", "W"], 2, spatial=(5, 7))
    assert X.shape == (2, 3, 5, 7) and X.dtype == np.float16 and "set to [5, 7]" in notes[0]


# ---- custom domains and external-data keys (issue 11 items 11 and 12) ----


def _with_unused_function(m, domain="com.microsoft"):
    body = [onnx.helper.make_node("Identity", ["x"], ["y"])]
    m.functions.append(
        onnx.helper.make_function(
            domain, "Unused", ["x"], ["y"], body, [onnx.helper.make_opsetid("", 17)]
        )
    )
    m.opset_import.add(domain=domain, version=1)


def test_unused_local_function_does_not_open_its_domain(tmp_path, capsys):
    def edit(m):
        _with_unused_function(m, "com.example")
        m.graph.node[1].domain = "com.example"

    path = _edited(tmp_path, edit)
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3 and "custom-domain operators" in text and "com.example.Relu" in text


def test_custom_node_inside_a_local_function_refused(tmp_path):
    def edit(m):
        body = [onnx.helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")]
        m.functions.append(
            onnx.helper.make_function(
                "local", "Wrap", ["x"], ["y"], body,
                [onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.microsoft", 1)],
            )
        )
        m.opset_import.add(domain="local", version=1)
        m.graph.node[1].op_type, m.graph.node[1].domain = "Wrap", "local"

    with pytest.raises(ModelRejected, match=r"com\.microsoft\.FusedGemm"):
        load_model(_edited(tmp_path, edit))


def test_local_function_call_is_accepted(tmp_path):
    def edit(m):
        body = [onnx.helper.make_node("Relu", ["x"], ["y"])]
        m.functions.append(
            onnx.helper.make_function(
                "local", "MyRelu", ["x"], ["y"], body, [onnx.helper.make_opsetid("", 17)]
            )
        )
        m.opset_import.add(domain="local", version=1)
        m.graph.node[1].op_type, m.graph.node[1].domain = "MyRelu", "local"

    assert load_model(_edited(tmp_path, edit)).functions[0].name == "MyRelu"


def test_epcontext_always_refused_and_its_file_never_read(layout, tmp_path, capsys):
    model_dir, sentinel = layout
    atime = sentinel.stat().st_atime_ns

    def edit(m):
        _with_unused_function(m)  # the bypass: a local function in com.microsoft
        node = m.graph.node[1]
        node.op_type, node.domain = "EPContext", "com.microsoft"
        node.attribute.append(onnx.helper.make_attribute("ep_cache_context", str(sentinel)))
        node.attribute.append(onnx.helper.make_attribute("embed_mode", 0))

    path = _edited(model_dir, edit)
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3 and "EPContext" in text and "never runs those" in text
        assert SENTINEL[:24].decode() not in text
    if _atime_works(tmp_path):
        assert sentinel.stat().st_atime_ns == atime


@pytest.mark.parametrize(
    "extra,words",
    [
        ({"basepath": "."}, ["unknown external-data key 'basepath'", "tensor 'w1'"]),
        ({"foo": "1"}, ["unknown external-data key 'foo'", "tensor 'w1'"]),
        ({"offset": "0x0"}, ["offset '0x0'", "not an integer"]),
        ({"offset": " 0"}, ["offset ' 0'", "not an integer"]),
    ],
)
def test_unknown_or_odd_external_data_keys_refused(extra, words, tmp_path, capsys):
    (tmp_path / "w.bin").write_bytes(np.zeros(24, np.float32).tobytes())
    path = _with_location(tmp_path, "w.bin", **extra)
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3
        for word in words:
            assert word in text


def test_checksum_key_accepted_repeated_key_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.zeros(24, np.float32).tobytes())
    assert load_model(_with_location(tmp_path, "w.bin", checksum="abc")) is not None
    path = _with_location(tmp_path, "w.bin")
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].external_data.add(key="location", value="other.bin")
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelRejected, match="gives the external-data key 'location' twice"):
        load_model(path)


def test_onnxruntime_memory_marker_refused(tmp_path):
    folder = tmp_path / "*" / "_ORT_MEM_ADDR_"
    folder.mkdir(parents=True)
    (folder / "*").write_bytes(np.zeros(24, np.float32).tobytes())
    path = _with_location(tmp_path, "*/_ORT_MEM_ADDR_/*")
    with pytest.raises(ModelRejected, match="process memory"):
        load_model(path)


def test_oversized_output_refused(tmp_path, capsys):
    def edit(m):
        m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2**40

    path = _edited(tmp_path, edit)
    for code, text in _both_commands(capsys, path, tmp_path):
        assert code == 3 and "graph output 'logits'" in text and "per sample" in text
