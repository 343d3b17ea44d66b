"""SoftmaxProbe: planted accuracy, determinism, and its ONNX export run by onnxruntime."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from xnetmap.errors import InputError, UsageError
from xnetmap.study.probe import SoftmaxProbe, export_probe_onnx


def blobs(n, k, d, sep, seed, offset=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(k, d)) * sep
    y = rng.integers(0, k, n)
    X = (centres[y] + rng.normal(size=(n, d)) + offset) * scale
    return X.astype(np.float32), y


def test_separable_blobs_are_learned_exactly():
    X, y = blobs(3000, 6, 20, sep=4.0, seed=0, offset=50.0, scale=0.01)  # badly scaled raw
    Xt, yt = blobs(2000, 6, 20, sep=4.0, seed=1, offset=50.0, scale=0.01)
    p = SoftmaxProbe().fit(X, y)
    assert p.score(X, y) == 1.0
    assert p.score(Xt, yt) >= 0.995
    assert p.coef_.shape == (6, 20) and p.intercept_.shape == (6,)
    assert p.converged_
    h = np.array(p.history_)
    assert np.all(np.diff(h) <= 1e-12)  # monotone descent
    np.testing.assert_array_equal(p.predict(Xt), np.argmax(p.decision_function(Xt), axis=1))
    proba = p.predict_proba(Xt[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_reaches_bayes_accuracy_on_overlapping_gaussians():
    # two classes at -mu and +mu along one axis, unit noise: Bayes accuracy = Phi(mu)
    rng = np.random.default_rng(5)
    mu, n, d = 1.0, 20_000, 4
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += np.where(y == 1, mu, -mu)
    Xt = rng.normal(size=(n, d))
    yt = rng.integers(0, 2, n)
    Xt[:, 0] += np.where(yt == 1, mu, -mu)
    acc = SoftmaxProbe().fit(X, y).score(Xt, yt)
    assert acc == pytest.approx(NormalDist().cdf(mu), abs=0.012)


def test_deterministic_and_chunked_equals_cached():
    X, y = blobs(1500, 4, 10, sep=1.0, seed=2)
    a = SoftmaxProbe(max_iter=50).fit(X, y)
    b = SoftmaxProbe(max_iter=50).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    import xnetmap.study.probe as probe_mod

    old = probe_mod._CACHE_LIMIT
    probe_mod._CACHE_LIMIT = 0  # force the streamed path
    try:
        c = SoftmaxProbe(max_iter=50, chunk_size=256).fit(X, y)
    finally:
        probe_mod._CACHE_LIMIT = old
    np.testing.assert_allclose(c.coef_, a.coef_, rtol=1e-4, atol=1e-5)


def test_n_classes_keeps_absent_classes():
    X, y = blobs(600, 3, 5, sep=4.0, seed=3)
    p = SoftmaxProbe(n_classes=10).fit(X, y)
    assert p.predict_logits(X).shape == (600, 10)
    assert set(np.unique(p.predict(X))) <= {0, 1, 2}


def test_errors():
    with pytest.raises(UsageError, match="not fitted"):
        SoftmaxProbe().predict(np.zeros((2, 3)))
    with pytest.raises(InputError, match="shape"):
        SoftmaxProbe().fit(np.zeros((4, 3)), np.zeros(5, dtype=int))
    with pytest.raises(InputError, match="integer"):
        SoftmaxProbe().fit(np.zeros((4, 3)), np.zeros(4))
    p = SoftmaxProbe(max_iter=5).fit(*blobs(50, 2, 3, 3.0, 0))
    with pytest.raises(InputError, match="expects features"):
        p.predict(np.zeros((2, 4)))


def test_onnx_export_agrees_with_predict(tmp_path):
    X, y = blobs(1000, 5, 12, sep=1.5, seed=4)
    Xt, _ = blobs(300, 5, 12, sep=1.5, seed=7)
    p = SoftmaxProbe().fit(X, y)
    path = export_probe_onnx(p, tmp_path / "probe.classifier.onnx", 12, labels=list("abcde"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert [n.op_type for n in model.graph.node] == ["Gemm"]
    assert model.opset_import[0].version == 17
    props = {m.key: m.value for m in model.metadata_props}
    assert json.loads(props["xnetmap.labels"]) == list("abcde")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"features": Xt})
    np.testing.assert_allclose(logits, p.predict_logits(Xt), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(logits, axis=1), p.predict(Xt))
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(InputError, match="feature_dim"):
        export_probe_onnx(p, tmp_path / "x.onnx", 13)


def test_save_load_round_trip(tmp_path):
    X, y = blobs(400, 3, 6, sep=2.0, seed=8)
    p = SoftmaxProbe(alpha=1e-3).fit(X, y)
    path = p.save(tmp_path / "probe.npz")
    q = SoftmaxProbe.load(path)
    np.testing.assert_array_equal(q.predict_logits(X), p.predict_logits(X))
    assert q.alpha == 1e-3 and q.history_ == p.history_ and q.converged_ == p.converged_
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not an xnetmap probe"):
        SoftmaxProbe.load(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="no such"):
        SoftmaxProbe.load(tmp_path / "missing.npz")
