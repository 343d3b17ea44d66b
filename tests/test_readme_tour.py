"""The README's tour, followed literally: every command of every block, in order, exits as shown.

The commands run as written, with ``bash``, in a temporary folder that holds the repository's
``models/`` and ``tools/`` and a ``data/fashion-mnist`` holding the first 1,000 training and
500 test images of the bundled files (same names, same IDX format), so the tour stays quick.
A block preceded by ``<!-- excerpt: REASON -->`` is not run (it needs what the repository does
not hold); ``<!-- tour: exit N -->`` says the block's commands exit N (a failing ``check``).
In a ``text`` block the commands are the lines starting with ``$ ``; in a ``bash`` block, every
line.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from zoo_data import DATA, read_idx

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(?:<!-- (excerpt|tour): *(.*?) -->\n)?```(\w*)\n(.*?)```", re.S)
N_TRAIN, N_TEST = 1000, 500


def tour_blocks() -> list[dict]:
    """The fenced blocks of the README's tour with their commands, marker and expected exit code."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = text[text.index("## A tour of the commands"): text.index("## Exit codes")]
    blocks = []
    for marker, note, lang, body in FENCE.findall(tour):
        if lang == "bash":
            commands = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("#")]
        elif lang == "text":
            commands = [ln[2:] for ln in body.splitlines() if ln.startswith("$ ")]
        else:
            continue  # toml, yaml: files, not commands
        if not commands:
            continue  # output only
        exit_code = int(note.split()[-1]) if marker == "tour" else 0
        blocks.append({"commands": commands, "excerpt": marker == "excerpt" and note,
                       "exit": exit_code})
    return blocks


def _write_idx(path: Path, array) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def _tour_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "models").symlink_to(ROOT / "models")
    (root / "tools").symlink_to(ROOT / "tools")
    data = root / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        for kind, nd in (("images", 3), ("labels", 1)):
            name = f"{prefix}-{kind}-idx{nd}-ubyte.gz"
            _write_idx(data / name, read_idx(DATA / name)[:n])
    return root


def test_tour_has_runnable_blocks_and_marked_excerpts():
    blocks = tour_blocks()
    runnable = [b for b in blocks if not b["excerpt"]]
    assert len(runnable) >= 10, [b["commands"][0] for b in runnable]
    assert all(b["excerpt"].strip() for b in blocks if b["excerpt"] is not False)
    firsts = [c.split()[1] for b in runnable for c in b["commands"] if c.startswith("xnetmap ")]
    for command in ("split", "inspect", "annotate", "extract", "fit", "run-study", "stitch",
                    "check"):
        assert command in firsts, f"no runnable example of xnetmap {command}"


@pytest.mark.slow
def test_readme_tour_runs(tmp_path):
    folder = _tour_folder(tmp_path / "tour")
    env = dict(os.environ, XNETMAP_CACHE=str(tmp_path / "cache"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    ran = 0
    for block in tour_blocks():
        if block["excerpt"]:
            continue
        for command in block["commands"]:
            proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, text=True,
                                  capture_output=True, timeout=900)
            assert proc.returncode == block["exit"], (
                f"README tour: `{command}` exited {proc.returncode}, expected {block['exit']}\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        ran += 1
    assert ran == len([b for b in tour_blocks() if not b["excerpt"]])
