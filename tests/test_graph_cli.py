"""`xnetmap split` and `xnetmap inspect` through the real entry point: exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import onnx_models as fm

from xnetmap.cli import main


def run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as code:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return code.value.code or 0, out.out, out.err


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "vgg.onnx"
    fm.save(fm.vgg_two_layer().model, path)
    return path


def test_split_prints_summary_and_writes_parts(model, tmp_path, capsys):
    code, out, err = run(["split", model, "-o", tmp_path / "o", "--samples", "3"], capsys)
    assert code == 0, err
    assert "D = 64" in out and "cut        pooled = flat" in out
    assert "certificate PASSED on 3 random" in out and "top-1 agreement 1.000" in out
    record = json.loads((tmp_path / "o" / "vgg.split.json").read_text())
    assert record["feature_dim"] == 64 and record["certificate"]["passed"]
    code, out, _ = run(
        ["split", model, "-o", tmp_path / "o", "--cut", "penultimate", "--no-verify"], capsys
    )
    assert code == 0 and "D = 24" in out and "certificate skipped" in out


def test_split_failed_certificate_exit_1(tmp_path, capsys):
    path = tmp_path / "half.onnx"
    fm.save(fm.fp16_resnet().model, path)
    code, _, err = run(["split", path, "--atol", "0", "--rtol", "0", "--samples", "8"], capsys)
    if code == 0:
        pytest.skip("this onnxruntime computes the fp16 split bit-exactly")
    assert code == 1 and "certificate FAILED" in err


def test_bad_cut_exit_2_lists_candidates(model, capsys):
    code, _, err = run(["split", model, "--cut", "bogus"], capsys)
    assert code == 2
    assert "'bogus'" in err and "hidden ['N', 24]" in err and "Traceback" not in err


def test_no_head_exit_3_points_to_inspect(tmp_path, capsys):
    path = tmp_path / "nohead.onnx"
    fm.save(fm.no_head().model, path)
    code, _, err = run(["split", path], capsys)
    assert code == 3 and "xnetmap inspect" in err and "--cut TENSOR" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content,code",
    [(None, 2), (b"", 3), (b"\x08\x07garbage" * 50, 3)],
    ids=["missing", "empty", "garbage"],
)
def test_bad_files_exit_codes(content, code, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    for command in (["split", path], ["inspect", path]):
        got, _, err = run(command, capsys)
        assert got == code and str(path) in err and "Traceback" not in err


def test_inspect_json_and_text(model, capsys):
    code, out, _ = run(["inspect", model, "--json"], capsys)
    info = json.loads(out)
    assert (
        code == 0 and info["cuts"]["pooled"]["D"] == 64 and info["cuts"]["penultimate"]["D"] == 24
    )
    assert [s["kind"] for s in info["head"]["chain"]].count("affine") == 3
    code, out, _ = run(["inspect", model], capsys)
    assert code == 0 and "cut penultimate  hidden" in out and "3 affine layer(s)" in out


def test_python_dash_m_split(tmp_path):
    path = tmp_path / "vit.onnx"
    fm.save(fm.vit_token_gather().model, path)
    proc = subprocess.run(
        [sys.executable, "-m", "xnetmap", "split", str(path), "--samples", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # without -o the parts go to the cache, never beside the model
    assert "D = 16" in proc.stdout and not (tmp_path / "vit.features.onnx").exists()
    features = proc.stdout.split()[1]
    assert Path(features).is_file() and "splits" in Path(features).parts


def test_split_certifies_on_real_images(tmp_path, capsys):
    path, images = fm.annotated_with_images(tmp_path, [(20 + i, 17) for i in range(4)])
    code, out, err = run(
        ["split", path, "--images", images, "--samples", "3"], capsys
    )
    assert code == 0, err
    assert f"certificate PASSED on 3 images from {images}" in out
