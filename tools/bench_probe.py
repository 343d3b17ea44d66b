"""Benchmark the softmax probe on real feature stores (time, final loss, accuracy, stability).

    python tools/bench_probe.py TRAIN_STORE VAL_STORE [--baseline OLD_PROBE.py] [--repeat 2]

TRAIN_STORE and VAL_STORE are feature-store folders written by ``xnetmap extract``
(or by ``run-study`` under ``CACHE/features/``), with labels. For each
implementation (the installed ``xnetmap.study.probe`` and, with ``--baseline``, a
module file defining ``SoftmaxProbe``, e.g. ``git show REV:xnetmap/study/probe.py``)
it prints: fit seconds (best of ``--repeat``), iterations, converged, the final
objective, the largest gradient entry at the end, train and val accuracy, whether
repeated fits are bit-identical, and how many val predictions change when the
train features are perturbed by 1e-6 relative noise (what another machine's
onnxruntime/BLAS kernels do to features), plus the number of val images whose
top-2 logit margin is below 1e-4 (the only ones rounding could flip).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np


def load_store(path: str) -> tuple[np.ndarray, np.ndarray]:
    from xnetmap.extract.store import FeatureStore

    store = FeatureStore.open(path)
    rows = np.flatnonzero(~np.asarray(store.mask, bool))
    return store.take(rows), np.asarray(store.labels)[rows].astype(np.int64)


def load_impl(path: str | None):
    if path is None:
        from xnetmap.study.probe import SoftmaxProbe

        return SoftmaxProbe
    spec = importlib.util.spec_from_file_location("baseline_probe", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SoftmaxProbe


def objective(p, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The probe's objective and largest gradient entry at its fitted weights (standardised)."""
    Z = (X.astype(np.float64) - p.mean_) / p.scale_
    W = p.coef_.astype(np.float64) * p.scale_  # back to standardised-space weights
    b = p.intercept_.astype(np.float64) + p.coef_.astype(np.float64) @ p.mean_
    L = Z @ W.T + b
    L -= L.max(axis=1, keepdims=True)
    E = np.exp(L)
    S = E.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    f = -np.mean(L[rows, y] - np.log(S[:, 0])) + 0.5 * p.alpha * np.sum(W * W)
    P = E / S
    P[rows, y] -= 1.0
    g = np.concatenate([(P.T @ Z / len(y) + p.alpha * W).ravel(), P.mean(axis=0)])
    return float(f), float(np.max(np.abs(g)))


def bench(name: str, cls, X, y, Xv, yv, repeat: int) -> None:
    k = int(max(y.max(), yv.max())) + 1
    times, fits = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fits.append(cls(n_classes=k).fit(X, y))
        times.append(time.perf_counter() - t0)
    p = fits[0]
    same = all(np.array_equal(q.coef_, p.coef_) and np.array_equal(q.intercept_, p.intercept_)
               for q in fits[1:])
    f, gmax = objective(p, X, y)
    pred = p.predict(Xv)
    logits = np.sort(p.predict_logits(Xv).astype(np.float64), axis=1)
    margin = logits[:, -1] - logits[:, -2]
    rng = np.random.default_rng(0)
    Xn = (X * (1 + 1e-6 * rng.standard_normal(X.shape))).astype(np.float32)
    flips = int(np.sum(cls(n_classes=k).fit(Xn, y).predict(Xv) != pred))
    print(f"{name:9s} fit {min(times):7.2f} s  iters {p.n_iter_:4d}  "
          f"converged {p.converged_!s:5s}  "
          f"loss {f:.10f}  max|grad| {gmax:.1e}  train {p.score(X, y) * 100:6.2f} %  "
          f"val {int(np.sum(pred == yv)):5d}/{len(yv)}  bit-identical {same}  "
          f"flips@1e-6 {flips}  margins<1e-4 {int(np.sum(margin < 1e-4))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("--baseline", help="a probe.py to compare with (defines SoftmaxProbe)")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    X, y = load_store(a.train)
    Xv, yv = load_store(a.val)
    print(f"train {X.shape}, val {Xv.shape}, {int(y.max()) + 1} classes")
    if a.baseline:
        bench("baseline", load_impl(a.baseline), X, y, Xv, yv, a.repeat)
    bench("current", load_impl(None), X, y, Xv, yv, a.repeat)


if __name__ == "__main__":
    main()
