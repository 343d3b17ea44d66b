"""The README's front door and CI run the same commands.

``.ci/run`` runs the README's second command (split at ``&&``); this test fails
when one of them changes without the other.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _front_door() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Start here")
    blocks = re.findall(r"```bash\n(.*?)```", text[start:], flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_starts_with_the_demo_and_the_tests():
    demo, tests = _front_door()
    assert demo.endswith("xnetmap demo")
    assert tests.endswith("pytest -q")


def test_ci_runs_the_readme_test_command():
    _, tests = _front_door()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for part in (p.strip() for p in tests.split("&&")):
        if part.startswith("python3 -m venv") or part.startswith(". .venv"):
            continue  # CI makes and activates the same venv on lines of its own
        assert any(line.strip().startswith(part) for line in ci), f"{part!r} not in .ci/run"
