"""The bounded model fuzzer: 200 mutated models through ``inspect`` and ``split``.

Fails on any exit 5, traceback, signal or timeout. The engine and the long run
(``--cases N`` / ``--minutes M``) live in ``tools/fuzz_models.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "fuzz_models.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_models", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_models"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cases_are_deterministic(fuzz):
    for index in (0, 7, 123):
        name_a, a = fuzz.make_case(0, index)
        name_b, b = fuzz.make_case(0, index)
        assert name_a == name_b and a.applied == b.applied
        bytes_a = a.raw if a.raw is not None else a.model.SerializeToString()
        bytes_b = b.raw if b.raw is not None else b.model.SerializeToString()
        assert bytes_a == bytes_b


def test_every_mutation_and_seed_is_drawn(fuzz):
    """The 200 CI cases exercise every mutation family and every seed model."""
    seeds, applied = set(), []
    for index in range(200):
        name, case = fuzz.make_case(0, index)
        seeds.add(name)
        applied.extend(case.applied)
    assert seeds == set(fuzz.seed_models())
    text = " | ".join(applied)
    for word in ("byte_flip", "truncate", "delete node", "missing tensor", "dim of", "rank of",
                 "elem_type", "named 'same'", "cycle", "default opset", "EPContext",
                 "function", "external data", "xnetmap.preprocess", "attribute"):
        assert word in text, word


def test_the_fuzzer_sees_a_planted_crash(fuzz, monkeypatch):
    """A case whose command dies with a traceback is reported as a failure."""
    result = fuzz.run_cli(["inspect", "/nonexistent/model.onnx"])
    assert result[0] == 2 and "Traceback" not in result[1]

    def boom(*args, **kwargs):
        raise RuntimeError("planted bug")

    monkeypatch.setattr("xnetmap.graph.inspect_model", boom)
    code, text = fuzz.run_cli(["inspect", str(TOOL)])
    assert code == 5 and "Traceback (most recent call last)" in text


def test_200_mutated_models_never_crash(fuzz):
    summary = fuzz.run_fuzz(200, seed=0, timeout=60)
    assert summary.cases == 200
    assert not summary.failures, summary.text()
    for command in ("inspect", "split"):
        assert sum(summary.histogram[command].values()) == 200
        assert set(summary.histogram[command]) <= fuzz.USER_EXITS
    # the mutations reach both refusals and successful splits
    assert summary.histogram["split"][3] > 0 and summary.histogram["split"][0] > 0
