"""Failures that used to be tracebacks (exit 5) and are user errors now (issue 12, 5-8)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from cli_run import run_cli
from extract_fixtures import conv_features_model, write_folder_dataset
from onnx import TensorProto, helper, numpy_helper

from xnetmap.data import open_dataset
from xnetmap.data.decode import UnreadableImage, decode_image
from xnetmap.errors import InputError

# ---- 5. a full disk / too-large file while writing outputs: exit 2, nothing partial ----

_LIMITED = """
import resource, signal, sys
from xnetmap.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
main(sys.argv[2:])
"""


def _run_with_file_limit(limit: int, *args) -> tuple[int, str]:
    """``xnetmap ARGS`` in a process that cannot write files over ``limit`` bytes
    (the kernel answers EFBIG, as a full disk answers ENOSPC)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit), *map(str, args)],
        capture_output=True, text=True,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from xnetmap.extract import extract_features

    tmp = tmp_path_factory.mktemp("hardening")
    folder = write_folder_dataset(tmp / "imgs", n_per_class=12, bad=False)
    src = conv_features_model(tmp / "src.features.onnx", channels=6, seed=1)
    tgt = conv_features_model(tmp / "tgt.features.onnx", channels=5, seed=2)
    const = _constant_features_model(tmp / "const.features.onnx")
    return tmp, {
        name: extract_features(model, str(folder), tmp / f"{name}_store").path
        for name, model in (("src", src), ("tgt", tgt), ("const", const))
    }


def test_fit_output_too_large_is_exit_2_and_leaves_nothing(stores, tmp_path):
    _, paths = stores
    out = tmp_path / "maps" / "m.npz"
    out.parent.mkdir()
    code, text = _run_with_file_limit(
        1000, "fit", paths["src"], paths["tgt"], "-o", out, "--solver", "lstsq", "-q"
    )
    assert code == 2, text
    assert "Traceback" not in text
    assert f"cannot write {out}" in text and "File too large" in text
    assert list(out.parent.iterdir()) == []  # no map, no temp file


def test_atomic_writes_keep_the_old_content_on_failure(tmp_path):
    """check --json/--junit and the study reports write through these functions."""
    target = tmp_path / "report.json"
    target.write_text('{"old": true}\n')
    script = (
        "import resource, signal, sys\n"
        "from xnetmap.fsutil import atomic_write_json\n"
        "from xnetmap.errors import InputError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
        "try:\n"
        f"    atomic_write_json({str(target)!r}, {{'x': 'y' * 1000}})\n"
        "except InputError as err:\n"
        "    print('exit', err.exit_code, err.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.startswith("exit 2 cannot write"), out.stdout + out.stderr
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_write_failure_is_still_an_oserror_for_callers_that_reword_it():
    from xnetmap.errors import OutputNotWritten

    err = OutputNotWritten("cannot write x", errno=28, strerror="No space left", filename="x")
    assert isinstance(err, OSError) and isinstance(err, InputError)
    assert err.errno == 28 and err.exit_code == 2 and str(err) == "cannot write x"


# ---- 6. fit --json: a NaN r2 is null, the line is valid JSON ----


def _constant_features_model(path):
    """Features that do not depend on the image: [N, 1, 28, 28] -> [N, 2] = (1, 2)."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Mul", ["f", "zero"], ["z"]),
        helper.make_node("Add", ["z", "one_two"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes, "constant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.zeros(2, np.float32), "zero"),
         numpy_helper.from_array(np.array([1, 2], np.float32), "one_two")],
    )
    from extract_fixtures import FASHION_PREPROCESS, _save

    return _save(graph, path, FASHION_PREPROCESS)


def test_fit_json_writes_null_for_nan(stores, tmp_path):
    _, paths = stores
    code, out = run_cli("fit", paths["src"], paths["const"], "-o", tmp_path / "m.npz",
                        "--solver", "lstsq", "--json")
    assert code == 0, out
    line = out.strip().splitlines()[-1]
    assert "NaN" not in line and "Infinity" not in line
    summary = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert summary["r2"] is None and summary["d_out"] == 2


# ---- 7. an empty dataset says so, naming it ----


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_empty_dataset_is_named(kind, tmp_path):
    path = tmp_path / f"empty.{kind}"
    images = np.zeros((0, 28, 28), np.uint8)
    if kind == "npy":
        np.save(path, images)
    else:
        np.savez(path, x=images, y=np.zeros(0, np.int64))
    with pytest.raises(InputError, match=rf"dataset .*empty\.{kind} \({kind}\) has no samples"):
        open_dataset(path)


def test_extract_on_empty_dataset_is_exit_2_naming_it(stores, tmp_path):
    tmp, _ = stores
    path = tmp_path / "val.npy"
    np.save(path, np.zeros((0, 28, 28), np.uint8))
    code, out = run_cli("extract", tmp / "src.features.onnx", path, "-o", tmp_path / "s")
    assert code == 2 and "val.npy (npy) has no samples" in out and "masked" not in out


# ---- 8. a PNG whose zlib stream ends early is unreadable, not zero-filled ----


def _png(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_png_with_early_end_of_pixel_data_is_unreadable(tmp_path):
    rows = b"".join(b"\x00" + bytes([200] * 16) for _ in range(16))
    whole, short = tmp_path / "whole.png", tmp_path / "short.png"
    whole.write_bytes(_png(16, 16, rows))
    short.write_bytes(_png(16, 16, rows[: len(rows) // 2]))  # a clean zlib stream, half the rows
    assert np.asarray(decode_image(whole)).min() == 200
    with pytest.raises(UnreadableImage, match="PNG pixel data ends early: 136 of 272 bytes"):
        decode_image(short)


def test_short_png_is_masked_and_reported_by_extract(stores, tmp_path):
    tmp, _ = stores
    folder = write_folder_dataset(tmp_path / "imgs", n_per_class=4, bad=False)
    rows = b"".join(b"\x00" + bytes([90] * 28) for _ in range(28))
    (folder / "a" / "short.png").write_bytes(_png(28, 28, rows[: 29 * 14]))
    code, out = run_cli("extract", tmp / "src.features.onnx", folder, "-o", tmp_path / "s",
                        "--max-bad", "0.5")
    assert code == 0, out
    assert "short.png" in out and "ends early" in out
    from xnetmap.extract.store import FeatureStore

    store = FeatureStore.open(tmp_path / "s")
    ids = list(store.ids)
    assert store.mask[ids.index(next(i for i in ids if i.endswith("short.png")))]


def test_preprocess_size_over_the_pixel_limit_refused():
    from xnetmap.data.preprocess import PreprocessSpec

    with pytest.raises(InputError, match=r"preprocess size \[100000, 100000\].*over the limit"):
        PreprocessSpec(size=[100000, 100000])
