"""A study's maps fitted side by side (MapFits) and the BLAS limits the fit threads share."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from extract_fixtures import conv_features_model, write_idx_dataset

from xnetmap.errors import InputError
from xnetmap.fit import blas
from xnetmap.study.maps import MapFits, fit_cached, fit_jobs


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Three real feature stores of one IDX dataset, and one of another dataset."""
    from xnetmap.extract import extract_features

    tmp = tmp_path_factory.mktemp("mapfits")
    idx = write_idx_dataset(tmp / "idx", 600)
    stores = [extract_features(conv_features_model(tmp / f"m{k}.features.onnx", channels=c,
                                                   seed=k), f"idx:{idx}", tmp / f"s{k}")
              for k, c in enumerate((6, 5, 7))]
    other = extract_features(conv_features_model(tmp / "o.features.onnx", channels=4, seed=9),
                             f"idx:{write_idx_dataset(tmp / 'idx2', 50)}", tmp / "other")
    return tmp, stores, other


PAIRS = [(i, j) for i in range(3) for j in range(3) if i != j]
PARAMS = {"solver": "gd", "seed": 0, "epochs": 4}


def test_two_jobs_fit_the_maps_one_job_fits(zoo):
    tmp, stores, _ = zoo
    before = blas.blas_threads()
    with MapFits(PAIRS, stores, tmp / "cache2", PARAMS, jobs=2) as fits:
        two = {p: fits.result(p) for p in PAIRS}
    assert blas.blas_threads() == before  # the per-fit BLAS limit is lifted again
    one = {p: fit_cached(stores[p[0]], stores[p[1]], tmp / "cache1", PARAMS) for p in PAIRS}
    for p in PAIRS:
        (m2, path2), (m1, path1) = two[p], one[p]
        assert path2.name == path1.name and path2.is_file()  # same content key, one file each
        assert m2.W_.shape == (stores[p[1]].dim, stores[p[0]].dim)
        # different BLAS thread counts round differently: the fits agree, not bit for bit
        assert m2.metrics_["cosine"] == pytest.approx(m1.metrics_["cosine"], abs=1e-3)
        assert np.isfinite(m2.W_).all()


def test_a_failing_fit_reaches_the_caller_and_stops_the_rest(zoo):
    tmp, stores, other = zoo
    pairs = [(0, 3), (0, 1), (1, 2), (2, 0)]
    before = blas.blas_threads()
    with pytest.raises(InputError, match="extract both stores from the same dataset"):
        with MapFits(pairs, stores + [other], tmp / "cache3", PARAMS, jobs=2) as fits:
            for p in pairs:
                fits.result(p)
    assert blas.blas_threads() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("xnetmap-fit")]


def test_one_job_fits_in_the_calling_thread(zoo):
    tmp, stores, _ = zoo
    with MapFits(PAIRS[:2], stores, tmp / "cache4", {"solver": "lstsq"}, jobs=1) as fits:
        assert fits._pool is None
        amap, path = fits.result(PAIRS[0])
    assert path.is_file() and amap.solver == "lstsq"


def test_jobs_follow_the_device():
    assert fit_jobs({"device": "cuda"}) == 1
    assert fit_jobs({}) in (1, 2)


def test_blas_limits_nest_and_restore():
    before = blas.blas_threads()
    with blas.limit(1):
        assert blas.blas_threads() == 1
        with blas.one_thread():  # already one thread: left alone
            assert blas.blas_threads() == 1
        assert blas.blas_threads() == 1
    assert blas.blas_threads() == before
    with blas.one_thread():
        assert blas.blas_threads() == 1
    assert blas.blas_threads() == before


def test_two_threads_reading_one_store_hash_each_shard_once(zoo, monkeypatch):
    from xnetmap.extract import FeatureStore

    _, stores, _ = zoo
    store = FeatureStore.open(stores[0].path)
    calls = []
    real = FeatureStore._read_verified

    def counted(self, k):
        calls.append(k)
        return real(self, k)

    monkeypatch.setattr(FeatureStore, "_read_verified", counted)
    rows = np.arange(store.n)
    out = [None, None]

    def read(i):
        out[i] = store.take(rows)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(out[0], out[1])
    assert sorted(calls) == sorted(set(calls))  # every shard verified once


def test_each_source_gram_is_computed_once_and_gives_the_maps_of_separate_passes(zoo):
    tmp, stores, _ = zoo
    with MapFits(PAIRS, stores, tmp / "cache4", {**PARAMS, "solver": "lstsq"}, jobs=2) as fits:
        shared = {p: fits.result(p)[0] for p in PAIRS}
    assert fits.grams.computed == 3  # one pass per source, not one per map (6)
    for p in PAIRS:
        alone, _ = fit_cached(stores[p[0]], stores[p[1]], tmp / "cache5",
                              {**PARAMS, "solver": "lstsq"})
        np.testing.assert_allclose(shared[p].W_, alone.W_, rtol=1e-4, atol=1e-6)


def test_a_source_with_one_map_keeps_the_one_pass_moments(zoo):
    tmp, stores, _ = zoo
    with MapFits([(0, 1), (1, 0)], stores, tmp / "cache6", {**PARAMS, "solver": "lstsq"},
                 jobs=2) as fits:
        fits.result((0, 1))
        fits.result((1, 0))
    assert fits.grams.computed == 0  # a check's two maps: no separate Gram pass
