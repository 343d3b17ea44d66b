"""One cache shared by every command, and each model read once per run.

run-study then check on the same models and data extracts features once; a
second run-study writes nothing new into the cache; run-study parses each model
file at most twice (once for its header, once for surgery).
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
from cli_run import run_cli
from zoo_data import MODELS, fashion, write_npz

A, B = MODELS / "resnet_v2.onnx", MODELS / "inception.onnx"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-cache")
    xt, yt = fashion("train", 400)
    xv, yv = fashion("test", 200)
    return {"train": write_npz(root / "train.npz", xt, yt),
            "val": write_npz(root / "val.npz", xv, yv), "root": root}


def _files(cache: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}


def test_study_then_check_share_features_and_a_second_study_writes_nothing(
        data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XNETMAP_CACHE", str(cache))  # the default cache, no --cache flag
    loads = collections.Counter()
    real_load = onnx.load

    def counting_load(f, *args, **kwargs):
        loads[Path(str(f)).resolve()] += 1
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", counting_load)
    study = ["run-study", A, B, "--train", data["train"], "--val", data["val"],
             "-o", tmp_path / "study", "--epochs", "2", "--bootstrap", "50"]
    code, out = run_cli(*study)
    assert code == 0, out
    assert loads[A.resolve()] <= 2 and loads[B.resolve()] <= 2, dict(loads)
    assert (tmp_path / "study" / "maps" / "resnet_v2__to__inception.npz").is_file()
    assert "maps/resnet_v2__to__inception.npz" in (tmp_path / "study" / "report.md").read_text()
    stores = sorted(p.parent for p in (cache / "features").rglob("manifest.json"))
    assert len(stores) == 4  # two models x (train, val)
    before = _files(cache)

    code, out = run_cli("check", A, B, "--val", data["val"], "--train", data["train"],
                        "--solver", "gd", "-q")
    assert code in (0, 1), out
    after = _files(cache)
    assert sorted(p.parent for p in (cache / "features").rglob("manifest.json")) == stores
    assert {p: t for p, t in after.items() if "features" in p.parts} == \
        {p: t for p, t in before.items() if "features" in p.parts}

    code, out = run_cli(*study)
    assert code == 0, out
    assert out.count("(cached)") == 4, out
    assert _files(cache) == after  # nothing new, nothing rewritten
