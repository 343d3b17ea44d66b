"""The package's front door: lazy imports, --help/--version, exit codes, README <-> CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from xnetmap.cli import main
from xnetmap.errors import (
    DeviceUnavailable,
    InputError,
    ModelRejected,
    TooManyBadImages,
    UsageError,
    VerificationFailed,
    XnetmapError,
)

ROOT = Path(__file__).resolve().parent.parent


def test_help_imports_no_heavy_module():
    code = (
        "import sys; from xnetmap.cli import app; import xnetmap; "
        "heavy = [m for m in ('onnx', 'onnxruntime', 'numpy', 'PIL', 'cupy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_help_and_version():
    res = subprocess.run([sys.executable, "-m", "xnetmap", "--help"], capture_output=True,
                         text=True)
    assert res.returncode == 0
    for command in ("split", "inspect", "extract", "fit", "run-study", "check", "demo", "stitch"):
        assert command in res.stdout
    res = subprocess.run([sys.executable, "-m", "xnetmap", "--version"], capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stdout.startswith("xnetmap ")


def test_exit_codes_follow_design():
    assert VerificationFailed.exit_code == 1
    assert UsageError.exit_code == InputError.exit_code == DeviceUnavailable.exit_code == 2
    assert ModelRejected.exit_code == 3
    assert TooManyBadImages.exit_code == 4


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["split", "--no-such-flag"])
    assert exc.value.code == 2


def test_user_error_is_one_line_without_traceback(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tmp_path / "missing.onnx")])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0 and "missing.onnx" in err


def test_a_bug_prints_the_traceback_and_exits_5(capsys, monkeypatch, tmp_path):
    import xnetmap.graph

    def broken(*_a, **_k):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(xnetmap.graph, "inspect_model", broken)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(model)])
    err = capsys.readouterr().err
    assert exc.value.code == 5
    assert "Traceback" in err and "planted bug" in err and "report" in err


def test_xnetmap_error_message_is_the_text():
    assert str(XnetmapError("file x.onnx: do y")) == "file x.onnx: do y"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    """.ci/run must install and test exactly as the README's second command says."""
    lines = _readme_commands()
    test_cmd = next(line for line in lines if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    for part in [p.strip() for p in test_cmd.split("&&")]:
        if part.startswith(("python3 -m venv", ". .venv/bin/activate")):
            assert part.split()[0] in ci
            continue
        assert part in ci, f"README step {part!r} is not in .ci/run"
