"""Decoding a new store's first batches while onnxruntime opens its session (LocalEngine)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from extract_fixtures import (
    conv_features_model,
    features_model_onnxruntime_rejects,
    write_folder_dataset,
)

from xnetmap.data import open_dataset
from xnetmap.errors import ModelRejected
from xnetmap.extract import extract_features
from xnetmap.extract.engines import LocalEngine, Unit
from xnetmap.extract.extract import _resolve_preprocess


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ahead")
    return tmp, conv_features_model(tmp / "m.features.onnx", channels=6, seed=1), \
        write_folder_dataset(tmp / "imgs", n_per_class=40, bad=True)


def _decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("xnetmap-decode")]


def test_store_decoded_ahead_equals_one_decoded_in_the_loop(folder, tmp_path):
    _, model, data = folder
    ahead = extract_features(model, str(data), tmp_path / "a", batch_size=16, workers=2,
                             max_bad=0.5)
    inline = extract_features(model, str(data), tmp_path / "b", batch_size=16, workers=0,
                              max_bad=0.5)
    assert ahead.manifest["shards"] == inline.manifest["shards"]  # same bytes (sha256)
    assert ahead.mask.sum() == 2 and np.array_equal(ahead.mask, inline.mask)
    assert not _decode_threads()


def test_engine_runs_the_batches_it_decoded_ahead_or_drops_them(folder):
    _, model, data = folder
    ds = open_dataset(str(data))
    spec, _ = _resolve_preprocess(None, model)
    units = [Unit(0, s, min(s + 16, len(ds))) for s in range(0, len(ds), 16)]
    results = {}
    for name, given in (("same", units), ("other", [Unit(0, 5, 21)] + units[2:])):
        eng = LocalEngine("cpu", workers=2)
        eng.start(model)
        eng.decode_ahead(ds, spec, units)
        first, pipe = eng._early
        assert first == units[:4] and len(pipe.pending) == 4  # started before ready()
        eng.ready()
        results[name] = {r.unit: r.F for r in eng.run(ds, spec, given)}
        assert eng._early is None
        eng.close()
    for u in units[2:]:
        assert np.array_equal(results["same"][u], results["other"][u])
    odd = [r for r in results["other"] if r == Unit(0, 5, 21)]
    assert odd and results["other"][odd[0]] is not None
    assert not _decode_threads()


def test_a_model_onnxruntime_rejects_leaves_no_store_and_no_threads(folder, tmp_path):
    _, _, data = folder
    model = features_model_onnxruntime_rejects(tmp_path / "rejected.features.onnx")
    with pytest.raises(ModelRejected, match="onnxruntime cannot load"):
        extract_features(model, str(data), tmp_path / "s", batch_size=16, workers=2,
                         max_bad=0.5)
    assert not (tmp_path / "s").exists()
    assert not _decode_threads()
