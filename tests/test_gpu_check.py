"""tools/gpu_check.py without a GPU: every check skips (or fails) cleanly, never a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xnetmap.backend import has_cupy_gpu

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(has_cupy_gpu(), reason="a GPU is here: run tools/gpu_check.py itself")
def test_gpu_check_skips_cleanly_without_a_gpu():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--skip-paper"],
                         capture_output=True, text=True, timeout=300)
    lines = res.stdout.strip().splitlines()
    assert "Traceback" not in res.stderr + res.stdout
    assert lines[0].split()[:3] == ["check", "status", "seconds"]
    rows = [ln.split()[1] for ln in lines[1:-1]]
    assert len(rows) == 9 and set(rows) <= {"SKIP", "FAIL"}
    assert lines[-1] == f"gpu_check: 0 passed, {rows.count('FAIL')} failed"
    assert res.returncode == (1 if "FAIL" in rows else 2)
