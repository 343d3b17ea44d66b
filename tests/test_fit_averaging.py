"""Averaged iterates in the gradient-descent loop (``GDConfig.average``, ``AffineMap``)."""

from __future__ import annotations

import json

import numpy as np

from xnetmap.backend import HostDevice
from xnetmap.fit import AffineMap
from xnetmap.fit.gd import GDConfig, _Params, fit_gd


def _noisy(n=4000, d_in=16, d_out=12, noise=0.3, seed=1):
    """A planted affine map with enough target noise that minibatch steps jitter."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_in)).astype(np.float32)
    W = rng.standard_normal((d_out, d_in))
    Y = (X @ W.T + 2.0 + noise * rng.standard_normal((n, d_out)) * np.sqrt(d_in))
    rows = np.arange(n, dtype=np.int64)
    return X, Y.astype(np.float32), rows[: n - 800], rows[n - 800 :]


def _fit(X, Y, train, hold, **cfg):
    mean_x = X[train].mean(0).astype(np.float64)
    cov = np.cov(X[train].T.astype(np.float64), bias=True)
    return fit_gd(X, Y, train, hold, mean_x=mean_x, cov_xx=cov,
                  W0=np.zeros((Y.shape[1], X.shape[1])), b0=Y[train].mean(0).astype(np.float64),
                  cfg=GDConfig(**cfg))


def test_params_average_is_the_mean_of_the_iterates_in_the_centred_parametrisation():
    rng = np.random.default_rng(0)
    d_out, d_in = 3, 4
    m = rng.standard_normal(d_in)
    prm = _Params(HostDevice(), np.zeros((d_out, d_in)), np.zeros(d_out), m, np.eye(d_in))
    Ws = [rng.standard_normal((d_out, d_in)).astype(np.float32) for _ in range(3)]
    cs = [rng.standard_normal(d_out).astype(np.float32) for _ in range(3)]
    prm.add_to_average()  # a stale sum from an earlier epoch is cleared below
    prm.start_average()
    for W, c in zip(Ws, cs):
        prm.W[...], prm.c[...] = W, c
        prm.add_to_average()
    W_avg, b_avg = prm.averaged()
    want_W = np.mean(Ws, axis=0)
    np.testing.assert_allclose(W_avg, want_W, rtol=1e-6)
    np.testing.assert_allclose(b_avg, np.mean(cs, axis=0) - want_W @ m.astype(np.float32),
                               rtol=1e-5, atol=1e-6)


def test_one_step_per_epoch_averages_to_the_last_iterate():
    X, Y, train, hold = _noisy()
    a = _fit(X, Y, train, hold, epochs=3, batch_size=len(train), patience=9, average=True)
    b = _fit(X, Y, train, hold, epochs=3, batch_size=len(train), patience=9, average=False)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    assert [h["holdout_loss"] for h in a.history] == [h["holdout_loss"] for h in b.history]


def test_averaging_damps_the_minibatch_noise_of_a_large_step():
    """At a large step, the last iterate jitters around the optimum; the epoch mean does not.

    The held-out loss of the averaged map beats the last iterate's on every epoch
    (a margin of several times the loss's rounding, not a BLAS-dependent tie).
    """
    X, Y, train, hold = _noisy()
    kw = dict(epochs=2, batch_size=50, lr=1.0, patience=9)  # measured here: 0.59, 0.62
    avg = _fit(X, Y, train, hold, average=True, **kw)
    last = _fit(X, Y, train, hold, average=False, **kw)
    for ha, hl in zip(avg.history, last.history):
        assert ha["holdout_loss"] < 0.8 * hl["holdout_loss"], (ha, hl)


def test_affine_map_defaults_and_old_map_files(tmp_path):
    X, Y, _, _ = _noisy(n=1500)
    amap = AffineMap(epochs=2).fit(X, Y)
    assert amap.get_params()["average"] is True and amap.get_params()["lr"] == 0.3
    path = amap.save(tmp_path / "m.npz")
    assert AffineMap.load(path).average is True
    # a map saved before averaging existed has no "average" parameter: it was the last iterate
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["metadata"]))
    del meta["params"]["average"]
    arrays["metadata"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert AffineMap.load(old).average is False
