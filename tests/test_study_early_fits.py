"""Maps fitted during extraction by a nice-19 child process (EarlyFits)."""

from __future__ import annotations

import numpy as np
import pytest
from extract_fixtures import conv_features_model, write_idx_dataset

from xnetmap.fit import AffineMap
from xnetmap.study.early_fits import EarlyFits
from xnetmap.study.maps import MapFits

PARAMS = {"solver": "gd", "seed": 0, "epochs": 4}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Three real feature stores of one IDX dataset, and one of another dataset."""
    from xnetmap.extract import extract_features

    tmp = tmp_path_factory.mktemp("early")
    idx = write_idx_dataset(tmp / "idx", 400)
    stores = [extract_features(conv_features_model(tmp / f"m{k}.features.onnx", channels=c,
                                                   seed=k), f"idx:{idx}", tmp / f"s{k}")
              for k, c in enumerate((6, 5, 7))]
    other = extract_features(conv_features_model(tmp / "o.features.onnx", channels=4, seed=9),
                             f"idx:{write_idx_dataset(tmp / 'idx2', 50)}", tmp / "other")
    return tmp, stores, other


def test_pairs_start_as_their_stores_are_ready_and_match_the_map_stage(zoo):
    tmp, stores, _ = zoo
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    with EarlyFits(pairs, tmp / "c1", PARAMS) as early:
        early.train_ready(0, stores[0])
        assert not early._submitted and early._pool is None  # one store: nothing to fit
        early.train_ready(1, stores[1])
        assert set(early._submitted) == {(0, 1), (1, 0)}
        early._submitted[(0, 1)].result(timeout=120)  # so finish() below cannot drop it
        early.train_ready(2, stores[2])
        made = early.finish()
    assert set(made) <= set(pairs) and (0, 1) in made  # the first pair was not dropped
    with MapFits(pairs, stores, tmp / "c2", PARAMS, jobs=2) as fits:  # one BLAS thread each
        fresh = {p: fits.result(p)[0] for p in made}
    for p, path in made.items():
        early_map = AffineMap.load(path)
        np.testing.assert_allclose(early_map.W_, fresh[p].W_, rtol=1e-5, atol=1e-7)
    # the map stage finds them in the cache: nothing left to fit there
    with MapFits(list(made), stores, tmp / "c1", PARAMS, jobs=1) as fits:
        for p, path in made.items():
            assert str(fits.result(p)[1]) == path


def test_cached_maps_start_no_child_and_disabled_does_nothing(zoo):
    tmp, stores, _ = zoo
    with MapFits([(0, 1)], stores, tmp / "c3", PARAMS, jobs=1) as fits:
        fits.result((0, 1))
    with EarlyFits([(0, 1)], tmp / "c3", PARAMS) as early:
        early.train_ready(0, stores[0])
        early.train_ready(1, stores[1])
        assert early._pool is None and not early._submitted
    with EarlyFits([(0, 1)], tmp / "c4", PARAMS, enabled=False) as early:
        early.train_ready(0, stores[0])
        early.train_ready(1, stores[1])
        assert early.finish() == {}


def test_a_child_error_is_dropped_and_an_error_here_stops_the_child(zoo):
    tmp, stores, other = zoo
    with EarlyFits([(0, 1), (1, 0)], tmp / "c5", PARAMS) as early:
        early.train_ready(0, stores[0])
        early.train_ready(1, other)  # other samples: the child's fit raises
        assert early.finish() == {}  # the map stage will fit (0, 1) itself and say why not
    with pytest.raises(KeyboardInterrupt):
        with EarlyFits([(0, 1), (1, 0)], tmp / "c6", PARAMS) as early:
            early.train_ready(0, stores[0])
            early.train_ready(1, stores[1])
            procs = list(early._pool._processes.values())
            raise KeyboardInterrupt
    for proc in procs:
        proc.join(timeout=10)
        assert not proc.is_alive()
