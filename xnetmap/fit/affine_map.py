"""``AffineMap``: the fitted map ``y = W a + b`` between two feature spaces.

Follows scikit-learn's estimator contract: ``__init__`` only stores
hyperparameters, ``fit`` validates and returns ``self``, learned attributes end
in ``_``, ``transform``/``score`` refuse to run before ``fit``. Maps are saved as
``.npz`` files (``W``, ``b``, a JSON ``metadata`` string and, for ``norm``
calibration, ``norm_w``/``norm_b``) and loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backend import compute_device
from ..errors import InputError, UsageError
from ..fsutil import atomic_writer
from ..runtime import resolve_device
from .calibrate import MODES as CALIBRATIONS
from .calibrate import apply_norm, fit_calibration
from .gd import GDConfig, fit_gd
from .kernels import EPS
from .metrics import accumulate_metrics
from .rows import as_rows, scan_rows
from .solvers import accumulate_moments, solve_procrustes, solve_ridge
from .store_rows import fit_on_stores

SOLVERS = ("gd", "lstsq", "ridge", "procrustes")
INITS = ("lstsq", "zero")
FORMAT = "xnetmap.map"
FORMAT_VERSION = 1
LOSS_TEXT = "E = ||x/||x|| - y/||y||||^2 (x true target, y = W a + b)"


class NotFittedError(UsageError):
    """``transform``/``score``/``save`` called before ``fit``."""


class AffineMap:
    """Affine map from source features ``a`` (d_in) to target features (d_out).

    Parameters
    ----------
    solver : {"gd", "lstsq", "ridge", "procrustes"}
        ``gd`` is the paper's minibatch gradient descent on the cosine loss
        (:mod:`xnetmap.fit.gd`); ``lstsq``/``ridge`` the closed-form affine least
        squares; ``procrustes`` an orthogonal map plus bias.
    device : {"cpu", "cuda", "auto"}
        Where ``gd`` runs (the closed-form solvers always run on the CPU in float64).
    epochs : int
        Maximum passes over the training rows (``gd``).
    batch_size : int or None
        Minibatch rows (``gd``). None (default) picks ``clip(n_train // 16, 256,
        8192)``: 8192 keeps the per-step overhead small next to the two GEMMs
        (the whitening product costs d_in / (2 batch) of them) and smaller data
        sets still get at least 16 steps per epoch.
    lr : float
        Dimensionless step (``gd``): multiplies the curvature-derived step
        ``1 / mean(2/||y||^2)`` in the whitened input space.
    momentum : float
        Nesterov momentum (``gd``).
    average : bool
        ``gd`` evaluates, and keeps, the mean of each epoch's iterates
        (Polyak-Ruppert averaging, :mod:`xnetmap.fit.gd`) rather than the last
        one. False keeps the last iterate, the loop before averaging (pair it with ``lr`` 0.1).
    seed : int
        Seeds the held-out split, the minibatch order and the whitening subsample.
    init : {"lstsq", "zero"}
        ``gd`` start. ``lstsq`` (default) warm-starts from the closed-form
        least-squares solution (one streaming pass of float64 moments, which also
        gives the exact whitening): the paper's cosine loss is then minimised from
        a map already close to its optimum, the start itself is evaluated and kept
        if no epoch beats it, and the held-out early stopping ends the run after a
        few epochs. ``zero`` is W = 0 and b = the target mean (a subsample
        estimates the whitening), the paper's cold start.
    calibrate : {"scalar", "norm", "none"}
        Length calibration after fitting; see :mod:`xnetmap.fit.calibrate`.
        Default ``scalar``: keeps the map affine and fixes the output length the
        cosine loss leaves free (the target classifier's bias makes it matter).
    holdout : float
        Fraction of rows held out (seeded) for early stopping and the reported
        metrics. 0 disables (then metrics are on the training rows).
    alpha : float
        Ridge strength for ``ridge``, relative to the mean source variance.
    patience : int
        ``gd`` stops after this many epochs without held-out improvement; each
        such epoch halves the step.
    whiten_rows : int
        Rows sampled to estimate the source covariance for ``gd``'s whitening.
    calibration_rows : int
        Training rows sampled to fit the calibration.
    eps : float
        Lower bound on vector norms in the loss.

    Attributes
    ----------
    W_ : ndarray of shape (d_out, d_in), float32
    b_ : ndarray of shape (d_out,), float32
    calibration_ : dict
    history_ : list of dict
        Per-epoch ``train_loss``, ``holdout_loss``, ``lr``, timings (``gd``; empty otherwise).
    metrics_ : dict
        Held-out ``loss`` (mean E), ``cosine``, ``r2``, ``mse``, ``n``, after calibration.
    info_ : dict
        Row counts, timings, solver details.
    """

    def __init__(self, solver: str = "gd", device: str = "cpu", epochs: int = 20,
                 batch_size: int | None = None, lr: float = 0.3, momentum: float = 0.5,
                 average: bool = True, seed: int = 0,
                 init: str = "lstsq", calibrate: str = "scalar", holdout: float = 0.1,
                 alpha: float = 1e-3, patience: int = 3, whiten_rows: int = 50_000,
                 calibration_rows: int = 65_536, eps: float = EPS):
        self.solver = solver
        self.device = device
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.average = average
        self.seed = seed
        self.init = init
        self.calibrate = calibrate
        self.holdout = holdout
        self.alpha = alpha
        self.patience = patience
        self.whiten_rows = whiten_rows
        self.calibration_rows = calibration_rows
        self.eps = eps

    # -- sklearn-style API -----------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        names = ("solver", "device", "epochs", "batch_size", "lr", "momentum", "average",
                 "seed", "init",
                 "calibrate", "holdout", "alpha", "patience", "whiten_rows",
                 "calibration_rows", "eps")
        return {k: getattr(self, k) for k in names}

    def set_params(self, **params: Any) -> AffineMap:
        for k, v in params.items():
            if k not in self.get_params():
                raise UsageError(f"AffineMap has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def fit(self, X: Any, Y: Any, *, rows: np.ndarray | None = None,
            progress: Any = None, source_gram: Any = None) -> AffineMap:
        """Fit the map on paired rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, d_in)
            Source features (ndarray or np.memmap; read in minibatches).
        Y : array-like of shape (n_samples, d_out)
            Target features for the same samples, same order.
        rows : ndarray of int, optional
            Use only these rows (e.g. the unmasked ones); default all.
        progress : callable, optional
            Called with each ``gd`` epoch record (dict) as it finishes.
        source_gram : SourceGram, optional
            ``X``'s Gram sums shared with other maps from the same source
            (:meth:`xnetmap.fit.gram_cache.GramCache.source`; ``X`` must be that source).

        Returns
        -------
        self

        Raises
        ------
        InputError
            Shapes disagree, inputs hold NaN/inf (rows named), or nothing usable is left.
        """
        self._check_params()
        X, Y = as_rows(X, "X (source features)"), as_rows(Y, "Y (target features)")
        if X.shape[0] != Y.shape[0]:
            raise InputError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; "
                             "source and target features must be paired row by row")
        t_start = time.perf_counter()
        all_rows = np.arange(X.shape[0], dtype=np.int64) if rows is None else \
            np.unique(np.asarray(rows, dtype=np.int64))
        if len(all_rows) and (all_rows[0] < 0 or all_rows[-1] >= X.shape[0]):
            raise InputError(f"rows must index the {X.shape[0]} samples; got "
                             f"{all_rows[0]}..{all_rows[-1]}")
        usable = scan_rows(X, Y, all_rows, self.eps)
        n_zero = len(all_rows) - len(usable)
        if len(usable) < 2:
            raise InputError(f"only {len(usable)} usable row(s) (after dropping {n_zero} "
                             "zero-norm target row(s)); need at least 2 to fit a map")
        rng = np.random.default_rng(self.seed)
        shuffled = rng.permutation(usable)
        n_hold = int(round(self.holdout * len(usable))) if self.holdout > 0 else 0
        n_hold = min(max(n_hold, 1 if self.holdout > 0 else 0), len(usable) - 1)
        hold = np.sort(shuffled[:n_hold])
        train = np.sort(shuffled[n_hold:])

        gram = source_gram.gram(X, train) if source_gram is not None else None
        W, b, history, extra = self._solve(X, Y, train, hold, rng, progress, gram)
        cal_rows = train if len(train) <= self.calibration_rows else \
            np.sort(rng.choice(train, self.calibration_rows, replace=False))
        cal = fit_calibration(self.calibrate, X, Y, cal_rows, W, b)
        if cal["mode"] == "scalar":
            W, b = W * cal["scale"], b * cal["scale"]
        self.W_ = np.ascontiguousarray(W, dtype=np.float32)
        self.b_ = np.ascontiguousarray(b, dtype=np.float32)
        self.calibration_ = cal
        self.history_ = history
        self.n_features_in_, self.n_features_out_ = X.shape[1], Y.shape[1]

        eval_rows = hold if len(hold) else cal_rows
        self.metrics_ = accumulate_metrics(X, Y, eval_rows, self.W_, self.b_, eps=self.eps,
                                           norm_model=self._norm_model())
        self.metrics_["on"] = "holdout" if len(hold) else "train"
        self.info_ = {"n_rows": int(len(all_rows)), "n_zero_target_rows": int(n_zero),
                      "n_train": int(len(train)), "n_holdout": int(len(hold)),
                      "fit_seconds": time.perf_counter() - t_start, **extra}
        return self

    def fit_stores(self, source_store: Any, target_store: Any, *,
                   progress: Any = None, grams: Any = None) -> AffineMap:
        """Fit on two feature stores (paths or ``FeatureStore``) paired by sample id.

        Rows masked (unreadable) in either store are skipped; the stores' model
        digests go into the map's metadata. ``grams``: a
        :class:`~xnetmap.fit.gram_cache.GramCache` shared by the fits of one study.
        See :func:`xnetmap.fit.fit_map`.
        """
        return fit_on_stores(self, source_store, target_store, progress=progress, grams=grams)

    def transform(self, X: Any) -> np.ndarray:
        """Map source features.

        Parameters
        ----------
        X : array-like of shape (n_samples, d_in)

        Returns
        -------
        ndarray of shape (n_samples, d_out), float32
        """
        self._check_fitted()
        A = np.asarray(X, dtype=np.float32)
        if A.ndim != 2 or A.shape[1] != self.n_features_in_:
            raise InputError(f"transform expects (n, {self.n_features_in_}) source features; "
                             f"got shape {A.shape}")
        P = A @ self.W_.T
        P += self.b_
        norm = self._norm_model()
        return norm(A, P) if norm is not None else P

    def score(self, X: Any, Y: Any) -> float:
        """Mean cosine similarity between mapped ``X`` and ``Y`` (higher is better; 1 - E/2)."""
        self._check_fitted()

        X, Y = as_rows(X, "X"), as_rows(Y, "Y")
        if X.shape[0] != Y.shape[0] or Y.shape[1] != self.n_features_out_:
            raise InputError(f"score expects X (n, {self.n_features_in_}) and Y "
                             f"(n, {self.n_features_out_}); got {X.shape} and {Y.shape}")
        rows = np.arange(X.shape[0], dtype=np.int64)
        return accumulate_metrics(X, Y, rows, self.W_, self.b_, eps=self.eps,
                                  norm_model=self._norm_model())["cosine"]

    # -- persistence -----------------------------------------------------------------------
    def metadata(self, **extra: Any) -> dict:
        """JSON-able description of the fitted map (what :meth:`save` writes)."""
        self._check_fitted()

        cal = {k: v for k, v in self.calibration_.items() if k not in ("norm_w", "norm_b")}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "xnetmap_version": __version__,
                "d_in": int(self.n_features_in_), "d_out": int(self.n_features_out_),
                "solver": self.solver,
                "loss": LOSS_TEXT if self.solver == "gd" else
                "squared error ||x - y||^2" if self.solver in ("lstsq", "ridge") else
                "squared error, W orthogonal (zero-padded)",
                "calibration": cal, "params": self.get_params(), "metrics": self.metrics_,
                "history": self.history_, "info": self.info_,
                "source_model_sha256": None, "target_model_sha256": None}
        meta.update(getattr(self, "provenance_", {}))
        meta.update(extra)
        return meta

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write the map atomically to ``path`` (.npz); ``extra`` goes into the metadata."""
        meta = self.metadata(**extra)
        arrays = {"W": self.W_, "b": self.b_,
                  "metadata": np.array(json.dumps(meta, default=_json_default))}
        if self.calibration_["mode"] == "norm":
            arrays["norm_w"] = np.asarray(self.calibration_["norm_w"], np.float32)
            arrays["norm_b"] = np.array(self.calibration_["norm_b"], np.float32)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        with atomic_writer(path) as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> AffineMap:
        """Read a map written by :meth:`save` (no pickle).

        Raises
        ------
        InputError
            Missing file, not an xnetmap map, or inconsistent arrays.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"map file {path} does not exist; create it with `xnetmap fit`")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays["metadata"]))
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path} is not a readable xnetmap map file ({err})") from err
        if meta.get("format") != FORMAT:
            raise InputError(f"{path} is not an xnetmap map (format {meta.get('format')!r})")
        W, b = arrays.get("W"), arrays.get("b")
        if W is None or b is None or W.ndim != 2 or b.shape != (W.shape[0],):
            raise InputError(f"{path}: W and b are missing or have inconsistent shapes")
        known = cls().get_params()
        params = {k: v for k, v in meta.get("params", {}).items() if k in known}
        params.setdefault("average", False)  # maps saved before averaging existed
        obj = cls(**params)
        obj.W_, obj.b_ = W.astype(np.float32), b.astype(np.float32)
        obj.n_features_out_, obj.n_features_in_ = W.shape
        cal = dict(meta.get("calibration", {"mode": "none"}))
        if cal.get("mode") == "norm":
            cal["norm_w"], cal["norm_b"] = arrays["norm_w"], float(arrays["norm_b"])
        obj.calibration_ = cal
        obj.history_ = meta.get("history", [])
        obj.metrics_ = meta.get("metrics", {})
        obj.info_ = meta.get("info", {})
        obj.provenance_ = {k: meta.get(k) for k in ("source_model_sha256", "target_model_sha256")}
        obj.metadata_ = meta
        return obj

    # -- internals -------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.solver not in SOLVERS:
            raise UsageError(f"--solver {self.solver!r} is not one of {', '.join(SOLVERS)}")
        if self.init not in INITS:
            raise UsageError(f"--init {self.init!r} is not one of {', '.join(INITS)}")
        if self.calibrate not in CALIBRATIONS:
            raise UsageError(f"--calibrate {self.calibrate!r} is not one of "
                             f"{', '.join(CALIBRATIONS)}")
        if int(self.epochs) < 1 or (self.batch_size is not None and int(self.batch_size) < 1):
            raise UsageError("--epochs and --batch-size must be at least 1")
        if not (self.lr > 0) or not (0 <= self.momentum < 1):
            raise UsageError(f"--lr must be > 0 and momentum in [0, 1); got {self.lr}, "
                             f"{self.momentum}")
        if not (0 <= self.holdout < 1):
            raise UsageError(f"holdout must be in [0, 1); got {self.holdout}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError("this AffineMap is not fitted yet; call fit() or load a map "
                                 "file first")

    def _norm_model(self) -> Any:
        cal = getattr(self, "calibration_", {"mode": "none"})
        if cal.get("mode") != "norm":
            return None
        return lambda A, P: apply_norm(cal, A, P, self.eps)

    def _solve(self, X: Any, Y: Any, train: np.ndarray, hold: np.ndarray,
               rng: np.random.Generator, progress: Any,
               gram: Any = None) -> tuple[np.ndarray, np.ndarray, list, dict]:

        if self.solver in ("lstsq", "ridge", "procrustes"):
            t0 = time.perf_counter()
            m = accumulate_moments(X, Y, train, gram=gram)
            if self.solver == "procrustes":
                W, b, extra = solve_procrustes(m)
            else:
                W, b, extra = solve_ridge(m, self.alpha if self.solver == "ridge" else 0.0)
            extra["solve_seconds"] = time.perf_counter() - t0
            return W, b, [], extra


        device = resolve_device(self.device)
        t0 = time.perf_counter()
        init_solve = None
        if self.init == "lstsq":
            m = accumulate_moments(X, Y, train, gram=gram)
            W0, b0, init_solve = solve_ridge(m, 0.0)
        else:
            sub = train if len(train) <= self.whiten_rows else \
                np.sort(rng.choice(train, self.whiten_rows, replace=False))
            m = accumulate_moments(X, Y, sub, cross=False)
            W0, b0 = np.zeros((Y.shape[1], X.shape[1])), m.mean_y
        t_init = time.perf_counter() - t0
        batch = int(self.batch_size) if self.batch_size is not None else \
            int(np.clip(len(train) // 16, 256, 8192))
        cfg = GDConfig(epochs=int(self.epochs), batch_size=batch, lr=float(self.lr),
                       momentum=float(self.momentum), average=bool(self.average),
                       seed=int(self.seed),
                       patience=int(self.patience), eps=float(self.eps),
                       eval_init=self.init == "lstsq",
                       profile=bool(getattr(self, "profile_gemms", False)))
        res = fit_gd(X, Y, train, hold, mean_x=m.mean_x, cov_xx=m.cov_xx, W0=W0, b0=b0, cfg=cfg,
                     device=compute_device(device), on_epoch=progress)
        return res.W, res.b, res.history, {"device": device, "init_seconds": t_init,
                                           "batch_size": batch, "init_solve": init_solve,
                                           "best_epoch": res.best_epoch,
                                           "stopped_early": res.stopped_early}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
