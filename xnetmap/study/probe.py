"""A softmax linear probe: multinomial logistic regression that can stand in for a classifier C.

Used by ``run-study --head probe`` for backbones trained on different label sets:
fit one probe per model on its train features and the dataset's labels, then
treat it as that model's C. Full-batch L-BFGS-B (``scipy.optimize.minimize``) on
a float64 NumPy objective, deterministic: the same data and settings give the
same weights. The objective is strictly convex for ``alpha > 0``: run to its
gradient tolerance, the fit lands on the one minimiser whatever path rounding
takes, so another machine's BLAS or feature rounding can only flip images whose
logit margin is that small (``tools/bench_probe.py`` counts them). A fit stopped
by ``max_iter`` instead depends on the path; ``converged_`` says which happened.

Features are standardised inside the fit for conditioning; the learned weights
are folded back so that ``coef_`` and ``intercept_`` act on raw features and the
probe exports to one ONNX ``Gemm`` (:func:`export_probe_onnx`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xnetmap.errors import InputError, UsageError
from xnetmap.fsutil import atomic_write_bytes

# cache the standardised training matrix when it is at most this many float64 values
_CACHE_LIMIT = 32_000_000


class SoftmaxProbe:
    """Multinomial logistic regression with L2 penalty on standardised features.

    Minimises ``mean_i CE(softmax(W z_i + b), y_i) + alpha / 2 * ||W||_F^2`` where
    ``z_i`` is the standardised feature vector.

    Parameters
    ----------
    alpha : float
        L2 strength on the weights (not the intercept), per-sample-mean scale.
    max_iter : int
        Maximum L-BFGS iterations. The default lets the fit converge (the zoo's
        20,000 x 256 features need about 770): a fit stopped by the cap depends on
        its path, so rounding differences between machines move more predictions
        (measured: 6 of 10,000 val predictions flip under 1e-6 relative feature
        noise when stopped at 300 iterations, 1 when converged).
    tol : float
        Stop when the largest absolute gradient entry falls below this.
    n_classes : int, optional
        Width of the output; default ``max(y) + 1``. Give it when some classes may
        be absent from the training labels so that class ids keep their meaning.
    history_size : int
        L-BFGS memory (number of curvature pairs).
    chunk_size : int
        Rows per chunk when the training matrix is too big to cache.

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features), float32
        Weights acting on raw features.
    intercept_ : ndarray of shape (n_classes,), float32
    classes_ : ndarray of shape (n_classes,)
    mean_, scale_ : ndarray of shape (n_features,)
        Standardisation used during the fit.
    history_ : list of float
        Objective after each iteration.
    n_iter_ : int
    converged_ : bool
    """

    def __init__(
        self,
        alpha: float = 1e-4,
        max_iter: int = 3000,
        tol: float = 1e-5,
        n_classes: int | None = None,
        history_size: int = 10,
        chunk_size: int = 65536,
    ) -> None:
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.n_classes = n_classes
        self.history_size = history_size
        self.chunk_size = chunk_size

    # ----------------------------------------------------------------- fitting

    def fit(self, X, y) -> SoftmaxProbe:
        """Fit on features ``X`` (n_samples, n_features) and integer labels ``y`` (n_samples,)."""
        if not hasattr(X, "shape") or len(X.shape) != 2:
            raise InputError(f"X must be a 2-D feature matrix; got {getattr(X, 'shape', X)!r}")
        n, d = X.shape
        y = np.asarray(y)
        if y.shape != (n,):
            raise InputError(f"y must have shape ({n},) to match X; got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise InputError(f"y must hold integer class ids; got dtype {y.dtype}")
        if n < 2:
            raise InputError(f"a probe needs at least 2 training samples; got {n}")
        if y.min() < 0:
            raise InputError(f"class ids must be >= 0; found {int(y.min())}")
        k = int(self.n_classes) if self.n_classes is not None else int(y.max()) + 1
        if y.max() >= k:
            raise InputError(f"class id {int(y.max())} does not fit n_classes={k}")
        if self.alpha < 0 or self.max_iter < 1:
            raise UsageError(
                f"probe needs alpha >= 0 and max_iter >= 1; got {self.alpha}, {self.max_iter}"
            )
        y = y.astype(np.int64)

        mean, scale = self._standardiser(X)
        cache = None
        if n * d <= _CACHE_LIMIT:
            cache = (np.asarray(X, dtype=np.float64) - mean) / scale

        def chunks():
            if cache is not None:
                yield cache, y
                return
            for s in range(0, n, self.chunk_size):
                Xc = (np.asarray(X[s : s + self.chunk_size], dtype=np.float64) - mean) / scale
                yield Xc, y[s : s + self.chunk_size]

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W = theta[: k * d].reshape(k, d)
            b = theta[k * d :]
            f = 0.0
            gW = np.zeros((k, d))
            gb = np.zeros(k)
            for Xc, yc in chunks():
                Z = Xc @ W.T + b
                Z -= Z.max(axis=1, keepdims=True)
                E = np.exp(Z)
                S = E.sum(axis=1, keepdims=True)
                rows = np.arange(len(yc))
                f -= float(np.sum(Z[rows, yc] - np.log(S[:, 0])))
                P = E / S
                P[rows, yc] -= 1.0
                gW += P.T @ Xc
                gb += P.sum(axis=0)
            f = f / n + 0.5 * self.alpha * float(np.sum(W * W))
            gW = gW / n + self.alpha * W
            return f, np.concatenate([gW.ravel(), gb / n])

        theta0 = np.zeros(k * d + k)
        theta, history, converged = _minimize(
            objective, theta0, max_iter=self.max_iter, tol=self.tol, m=self.history_size
        )
        W = theta[: k * d].reshape(k, d)
        b = theta[k * d :]
        # fold the standardisation into the weights: W (x - mean) / scale + b
        Wraw = W / scale
        self.coef_ = Wraw.astype(np.float32)
        self.intercept_ = (b - Wraw @ mean).astype(np.float32)
        self.classes_ = np.arange(k)
        self.mean_ = mean
        self.scale_ = scale
        self.history_ = history
        self.n_iter_ = len(history)
        self.converged_ = converged
        self.n_features_in_ = d
        return self

    def _standardiser(self, X) -> tuple[np.ndarray, np.ndarray]:
        n, d = X.shape
        s1 = np.zeros(d)
        s2 = np.zeros(d)
        shift = np.asarray(X[: min(n, self.chunk_size)], dtype=np.float64).mean(axis=0)
        for s in range(0, n, self.chunk_size):
            Xc = np.asarray(X[s : s + self.chunk_size], dtype=np.float64) - shift
            s1 += Xc.sum(axis=0)
            s2 += (Xc * Xc).sum(axis=0)
        m = s1 / n
        var = np.maximum(s2 / n - m * m, 0.0)
        scale = np.sqrt(var)
        # constant features carry nothing; a unit scale keeps them harmless
        scale[scale < 1e-12] = 1.0
        return shift + m, scale

    # -------------------------------------------------------------- prediction

    def _check_fitted(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise UsageError("SoftmaxProbe is not fitted; call fit(X, y) first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise InputError(
                f"probe expects features of shape (n, {self.coef_.shape[1]}); got {X.shape}"
            )
        return X

    def predict_logits(self, X) -> np.ndarray:
        """Logits of shape (n_samples, n_classes), float32, for raw features X (n_samples, d)."""
        X = self._check_fitted(X)
        Z = np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64)
        return (Z + self.intercept_).astype(np.float32)

    decision_function = predict_logits

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of shape (n_samples, n_classes)."""
        Z = self.predict_logits(X).astype(np.float64)
        Z -= Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Predicted class ids of shape (n_samples,), int64."""
        return np.argmax(self.predict_logits(X), axis=1).astype(np.int64)

    def score(self, X, y) -> float:
        """Top-1 accuracy (0..1) on features X and labels y."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # ------------------------------------------------------------- persistence

    _ARRAYS = ("coef_", "intercept_", "mean_", "scale_")

    def save(self, path) -> Path:
        """Write the fitted probe to an ``.npz`` (arrays + JSON metadata, no pickle), atomically."""
        import io

        if not hasattr(self, "coef_"):
            raise UsageError("cannot save an unfitted SoftmaxProbe; call fit(X, y) first")
        meta = {
            "format": "xnetmap.probe/1",
            "params": {
                "alpha": self.alpha,
                "max_iter": self.max_iter,
                "tol": self.tol,
                "n_classes": self.n_classes,
                "history_size": self.history_size,
                "chunk_size": self.chunk_size,
            },
            "history": self.history_,
            "converged": self.converged_,
        }
        buf = io.BytesIO()
        np.savez(
            buf,
            meta=np.array(json.dumps(meta)),
            **{a: getattr(self, a) for a in self._ARRAYS},
        )
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> SoftmaxProbe:
        """Read a probe written by :meth:`save`."""
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {a: z[a] for a in cls._ARRAYS}
        except FileNotFoundError:
            raise InputError(f"{p}: no such probe file") from None
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{p}: not an xnetmap probe file ({exc})") from None
        if meta.get("format") != "xnetmap.probe/1":
            raise InputError(f"{p}: unknown probe format {meta.get('format')!r}")
        probe = cls(**meta["params"])
        for a, v in arrays.items():
            setattr(probe, a, v)
        k, d = probe.coef_.shape
        probe.classes_ = np.arange(k)
        probe.history_ = list(meta["history"])
        probe.n_iter_ = len(probe.history_)
        probe.converged_ = bool(meta["converged"])
        probe.n_features_in_ = d
        return probe


def _minimize(fun, x0: np.ndarray, *, max_iter: int, tol: float, m: int = 10):
    """Minimise ``fun(x) -> (f, grad)`` by SciPy's L-BFGS-B (no bounds).

    Stops when the largest absolute gradient entry is at most ``tol`` or the
    relative decrease of ``f`` per iteration falls below 1e-14 (machine
    precision), or after ``max_iter`` iterations. Returns ``(x, history,
    converged)`` with ``history`` the objective after each iteration.
    """
    from scipy.optimize import minimize  # noqa: PLC0415

    history: list[float] = []
    res = minimize(
        fun, x0, jac=True, method="L-BFGS-B",
        callback=lambda intermediate_result: history.append(float(intermediate_result.fun)),
        options={"maxiter": int(max_iter), "maxfun": 20 * int(max_iter) + 20,
                 "maxcor": int(m), "gtol": float(tol), "ftol": 1e-14},
    )
    # status 0: a gradient or decrease criterion was met; 1: iteration/evaluation cap;
    # 2: the line search could not decrease f further (at numerical precision)
    converged = res.status == 0 or (res.status == 2 and np.max(np.abs(res.jac)) <= 100 * tol)
    return res.x, history, bool(converged)


def probe_to_onnx(probe: SoftmaxProbe, feature_dim: int, *, opset: int = 17, labels=None):
    """Build the ONNX classifier of a fitted probe: ``features`` [N, D] -> Gemm -> ``logits``.

    Parameters
    ----------
    probe : SoftmaxProbe
        Fitted.
    feature_dim : int
        D; must equal the probe's input width.
    opset : int
    labels : list of str, optional
        Class names stored as ``xnetmap.labels`` metadata.

    Returns
    -------
    onnx.ModelProto
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not hasattr(probe, "coef_"):
        raise UsageError("cannot export an unfitted SoftmaxProbe; call fit(X, y) first")
    k, d = probe.coef_.shape
    if int(feature_dim) != d:
        raise InputError(f"feature_dim={feature_dim} does not match the probe's input width {d}")
    W = numpy_helper.from_array(np.ascontiguousarray(probe.coef_, dtype=np.float32), "probe.W")
    b = numpy_helper.from_array(np.ascontiguousarray(probe.intercept_, dtype=np.float32), "probe.b")
    node = helper.make_node(
        "Gemm", ["features", "probe.W", "probe.b"], ["logits"], transB=1, name="probe_gemm"
    )
    graph = helper.make_graph(
        [node],
        "xnetmap_softmax_probe",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        initializer=[W, b],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="xnetmap",
        doc_string="Softmax linear probe fitted by xnetmap (multinomial logistic regression).",
    )
    model.ir_version = 8
    props = {"xnetmap.probe": json.dumps({"alpha": probe.alpha, "n_iter": probe.n_iter_})}
    if labels is not None:
        if len(labels) != k:
            raise InputError(f"{len(labels)} labels given for a probe with {k} classes")
        props["xnetmap.labels"] = json.dumps(list(labels))
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def export_probe_onnx(
    probe: SoftmaxProbe, path, feature_dim: int, opset: int = 17, *, labels=None
) -> Path:
    """Write the probe as an ONNX classifier C at ``path`` (atomically); returns the path."""
    model = probe_to_onnx(probe, feature_dim, opset=opset, labels=labels)
    return atomic_write_bytes(path, model.SerializeToString())
