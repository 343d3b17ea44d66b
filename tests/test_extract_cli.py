"""`xnetmap extract`: bad images, --max-bad, --device cuda, --json, refusal, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from extract_fixtures import (
    conv_features_model,
    min_over_headroom_model,
    write_folder_dataset,
    write_idx_dataset,
)

from xnetmap.cli import main
from xnetmap.data import open_dataset
from xnetmap.extract import FeatureStore
from xnetmap.graph import model_preprocess
from xnetmap.runtime import run_model

ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, argv)))
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 0
    return code, out, err


def _cli_ok(capsys, *argv) -> tuple[str, str]:
    try:
        main(list(map(str, argv)))
    except SystemExit as exc:  # typer exits 0 via SystemExit in standalone mode
        assert exc.code in (0, None), capsys.readouterr()
    return capsys.readouterr()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("imgs") / "folder")


def test_bad_images_masked_at_right_indices(tmp_path, folder, capsys):
    model = conv_features_model(tmp_path / "tiny.features.onnx")
    out, _ = _cli_ok(capsys, "extract", model, f"folder:{folder}", "-o", tmp_path / "s",
                     "--max-bad", "0.2", "--json", "--batch-size", "3")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n_bad"] == 2 and summary["n"] == 16
    st = FeatureStore.open(tmp_path / "s")
    bad_idx = [st.ids.index("a/bad_text.jpg"), st.ids.index("b/bad_truncated.jpg")]
    assert np.nonzero(st.mask)[0].tolist() == sorted(bad_idx)
    F = st.features()
    assert not F[st.mask].any()  # masked rows are zero
    assert {b["id"] for b in st.manifest["bad"]} == {"a/bad_text.jpg", "b/bad_truncated.jpg"}
    assert all(b["reason"] for b in st.manifest["bad"])
    # good rows are the features of their own image (never a neighbour substituted)
    ds = open_dataset(f"folder:{folder}")
    spec, _ = model_preprocess(model)
    good = np.nonzero(~st.mask)[0]
    X = np.stack([spec.apply(ds.load(int(i))) for i in good])
    np.testing.assert_allclose(F[good], run_model(model, X)["features"], rtol=1e-5, atol=1e-6)


def test_max_bad_exit_4(tmp_path, folder, capsys):
    model = conv_features_model(tmp_path / "tiny.features.onnx")
    code, _, err = _cli(capsys, "extract", model, f"folder:{folder}", "-o", tmp_path / "s",
                        "--max-bad", "0.1", "--quiet")
    assert code == 4
    assert "unreadable" in err and "--max-bad" in err
    assert "(a/bad_text.jpg)" in err  # the message names the file, not only its index


def test_uncreatable_store_folder_exit_2(tmp_path, folder, capsys):
    model = conv_features_model(tmp_path / "tiny.features.onnx")
    (tmp_path / "file").write_text("x")
    code, _, err = _cli(capsys, "extract", model, f"folder:{folder}", "-o",
                        tmp_path / "file" / "s", "--quiet")
    assert code == 2 and "cannot create store folder" in err and "Traceback" not in err


def test_nonfinite_and_zero_norm_rows_counted(tmp_path, folder, capsys):
    model = min_over_headroom_model(tmp_path / "mm.features.onnx")
    out, _ = _cli_ok(capsys, "extract", model, f"folder:{folder}", "-o", tmp_path / "s",
                     "--max-bad", "0.2")
    assert "1 non-finite and 1 zero-norm" in out
    st = FeatureStore.open(tmp_path / "s")
    nonfinite = [i for s in st.manifest["shards"] for i in s["nonfinite"]]
    zero = [i for s in st.manifest["shards"] for i in s["zero_norm"]]
    assert nonfinite == [st.ids.index("b/white.png")]
    assert zero == [st.ids.index("a/black.png")]  # masked bad rows are not counted as zero


def test_device_cuda_without_gpu_exit_2(tmp_path, folder, capsys):
    from xnetmap.runtime import has_ort_cuda

    if has_ort_cuda():
        pytest.skip("a CUDA GPU is present")
    model = conv_features_model(tmp_path / "tiny.features.onnx")
    code, _, err = _cli(capsys, "extract", model, f"folder:{folder}", "-o", tmp_path / "s",
                        "--device", "cuda", "--max-bad", "0.2")
    assert code == 2 and "cuda" in err
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_fingerprint_refusal_exit_2(tmp_path, folder, capsys):
    model = conv_features_model(tmp_path / "tiny.features.onnx")
    base = ["extract", model, f"folder:{folder}", "-o", tmp_path / "s", "--max-bad", "0.2"]
    _cli_ok(capsys, *base, "--quiet")
    code, _, err = _cli(capsys, *base, "--mean", "0.1")
    assert code == 2 and "--overwrite" in err
    out, _ = _cli_ok(capsys, *base, "--mean", "0.1", "--overwrite", "--json")
    assert json.loads(out)["computed_rows"] == 16


def _store_progress(store: Path) -> tuple[int, bool]:
    try:
        m = json.loads((store / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0, False
    return len(m["shards"]), bool(m["complete"])


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys):
    model = conv_features_model(tmp_path / "big.features.onnx", channels=64)
    images = write_idx_dataset(tmp_path / "idx", 6000)
    args = [model, f"idx:{images}", "--batch-size", "50", "--shard-rows", "100", "--workers",
            "1", "--threads", "1", "--quiet"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "xnetmap", "extract", *map(str, args), "-o",
                             str(killed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 40
    while time.time() < deadline and proc.poll() is None:
        if _store_progress(killed)[0] >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards_at_kill, complete = _store_progress(killed)
    assert 2 <= shards_at_kill < 60 and not complete
    # resume
    out, _ = _cli_ok(capsys, "extract", *args[:-1], "--json", "-o", killed)
    summary = json.loads(out)
    assert summary["resumed_shards"] >= shards_at_kill
    assert summary["computed_rows"] == 6000 - 100 * summary["resumed_shards"]
    assert not list(killed.glob(".*.tmp"))
    # uninterrupted reference
    _cli_ok(capsys, "extract", *args, "-o", tmp_path / "ref")
    a, b = FeatureStore.open(killed), FeatureStore.open(tmp_path / "ref")
    assert np.array_equal(a.features(), b.features())
    assert a.ids == b.ids and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.mask, b.mask)
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in
                                                           b.manifest["shards"]]


def test_cli_reports_recomputed_shard(tmp_path, capsys):
    model = conv_features_model(tmp_path / "tiny.features.onnx")
    images = write_idx_dataset(tmp_path / "idx", 200)
    base = ["extract", model, f"idx:{images}", "-o", tmp_path / "s", "--shard-rows", "64"]
    out, _ = _cli_ok(capsys, *base)
    assert "200 x 8 float32" in out
    shard = tmp_path / "s" / "shard-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[200] ^= 1
    shard.write_bytes(bytes(raw))
    out, err = _cli_ok(capsys, *base)
    assert "shard 1" in err and "sha256" in err and "recomputed" in err
    out, err = _cli_ok(capsys, *base)
    assert "complete store reused" in out and not err
