"""The gradient-descent loop is device neutral: the GPU path runs here end to end.

``fit_gd`` is driven through :class:`xnetmap.fit.gd_ops.DeviceOps` (the class
that drives CuPy) on a stand-in device: host memory behind a CuPy-like module
that records every call, with the CUDA kernels run by the C++ emulation. It
must reach the CPU path's answer, and no value may travel from the device to
the host inside an epoch's training pass (one sync per epoch, at evaluation).
"""

from __future__ import annotations

import numpy as np
import pytest
from cudaemu.emulate import cxx
from cudaemu.fake_device import FakeDevice

from xnetmap.backend import HostDevice
from xnetmap.fit import gd_ops
from xnetmap.fit.gd import GDConfig, fit_gd

pytestmark = pytest.mark.skipif(cxx() is None, reason="no C++ compiler (g++ or clang++) "
                                "to build the CUDA emulation")


def _planted(n=1200, d_in=12, d_out=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_in)).astype(np.float32)
    W = rng.standard_normal((d_out, d_in))
    Y = (X @ W.T + 0.5 + 0.01 * rng.standard_normal((n, d_out))).astype(np.float32)
    rows = np.arange(n, dtype=np.int64)
    return X, Y, rows[: n - 200], rows[n - 200 :]


def _fit(device, X, Y, train, hold, epochs=3, batch=100, on_epoch=None):
    mean_x = X[train].mean(0).astype(np.float64)
    cov = np.cov(X[train].T.astype(np.float64), bias=True)
    cfg = GDConfig(epochs=epochs, batch_size=batch, patience=epochs + 1)
    return fit_gd(X, Y, train, hold, mean_x=mean_x, cov_xx=cov,
                  W0=np.zeros((Y.shape[1], X.shape[1])), b0=Y[train].mean(0).astype(np.float64),
                  cfg=cfg, device=device, on_epoch=on_epoch)


def _epochs(log):
    """The log cut at each epoch's end marker."""
    parts, cur = [], []
    for ev in log:
        if ev == ("epoch", "end"):
            parts.append(cur)
            cur = []
        else:
            cur.append(ev)
    return parts


@pytest.mark.parametrize("free", [1 << 34, 0], ids=["resident", "streamed"])
def test_device_loop_matches_host_loop(free):
    X, Y, train, hold = _planted()
    host = _fit(HostDevice(), X, Y, train, hold)
    dev = _fit(FakeDevice(free), X, Y, train, hold)
    assert [h["epoch"] for h in dev.history] == [1, 2, 3]
    for a, b in zip(host.history, dev.history):
        assert a["holdout_loss"] == pytest.approx(b["holdout_loss"], rel=1e-3, abs=1e-6)
    np.testing.assert_allclose(dev.W, host.W, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dev.b, host.b, rtol=1e-3, atol=1e-4)
    assert host.history[-1]["holdout_loss"] < 1e-3  # it learnt the planted map


@pytest.mark.parametrize("free", [1 << 34, 0], ids=["resident", "streamed"])
def test_no_host_device_copy_inside_an_epoch(free):
    """Every device-to-host read happens after the last update of the epoch; per epoch
    exactly W, b, the train-loss sum and the held-out sum come back, whatever the
    number of steps (10 here); with resident data the only uploads are the index
    vectors of the training pass and of the held-out pass."""
    X, Y, train, hold = _planted()
    device = FakeDevice(free)
    res = _fit(device, X, Y, train, hold,
               on_epoch=lambda rec: device.log.append(("epoch", "end")))
    epochs = _epochs(device.log)
    assert len(epochs) == len(res.history) == 3
    for i, events in enumerate(epochs):
        updates = [k for k, e in enumerate(events) if e == ("kernel", "xnetmap_nesterov")]
        assert len(updates) == 2 * 10  # W and c, ten steps
        d2h = [k for k, e in enumerate(events) if e[0] == "d2h"]
        assert len(d2h) == 4, [events[k] for k in d2h]
        assert min(d2h) > max(updates), "a device value was read back inside the training pass"
        h2d = [e for e in events if e[0] == "h2d"]
        if i == 0:  # also holds the set-up: data and parameters copied in once
            continue
        if free:
            assert h2d == [("h2d", "asarray")] * 2  # the permutation and the held-out rows
        else:  # streamed: each minibatch (A and T) and each held-out block is copied in
            assert len(h2d) == 2 * 10 + 2 * 2  # 200 held-out rows in blocks of 100


def test_a_hidden_sync_per_step_fails_the_check(monkeypatch):
    """The recorded-call check can fail: a Python float of a device scalar per step."""
    seen = []
    orig = gd_ops.DeviceOps.loss_grad

    def leaky(self, P, b, T, aux, scale, colsum):
        loss, psq = orig(self, P, b, T, aux, scale, colsum)
        seen.append(float(loss.sum()))  # the kind of line that stalls a GPU every step
        return loss, psq

    monkeypatch.setattr(gd_ops.DeviceOps, "loss_grad", leaky)
    X, Y, train, hold = _planted()
    device = FakeDevice()
    _fit(device, X, Y, train, hold, epochs=1,
         on_epoch=lambda rec: device.log.append(("epoch", "end")))
    events = _epochs(device.log)[0]
    updates = [k for k, e in enumerate(events) if e == ("kernel", "xnetmap_nesterov")]
    d2h = [k for k, e in enumerate(events) if e[0] == "d2h"]
    assert len(seen) == 10 and min(d2h) < max(updates)
