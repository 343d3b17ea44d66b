"""The ``ray`` extraction engine: Ray Data over a Ray cluster, the same store byte for byte.

The driver (this process) cuts the work into the same units as the local engine
(batches that never cross a shard) and hands Ray Data the list of samples: one
row per unit holding the samples' file paths, or their pixels for array
datasets (IDX, .npy, .npz). An actor pool (``map_batches`` with
:class:`FeatureActor`, one onnxruntime session per actor through
:mod:`xnetmap.runtime`) decodes and preprocesses them with xnetmap's own
decoding policy and runs F. Features come back to the driver, which writes the
store with the one protocol of :mod:`xnetmap.extract.extract`.

Workers need read access to the images (the paths the driver sees: a shared
filesystem) but never to the store. F travels to them as bytes through Ray's
object store (models with external data files: by path, which they must read).
A worker that dies is restarted by Ray and its units are retried; a unit that
comes back twice is written once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..data import PreprocessSpec
from ..data.decode import UnreadableImage, decode_image, image_from_array
from ..errors import DeviceUnavailable, InputError, UsageError, XnetmapError
from ..fsutil import may_reference_external_data
from ..runtime import Runner, make_session, resolve_device
from .engines import Unit, UnitResult, feature_dim
from .fastpath import array_preparer
from .pipeline import prepare_batch

INSTALL = "pip install 'xnetmap[ray]'"
#: What a Ray worker process of an actor imports before it can run F (Ray Data's
#: actor wrapper pulls in pandas and pyarrow: ~1.4 s per process on this project's
#: 2-core machine). On the local clusters xnetmap starts, workers import them as they
#: boot (Ray's ``preload_python_modules``): the workers Ray starts with the cluster
#: are then ready for the first extraction's actors. Later actors get new processes,
#: which import them at boot instead of at the actor's start: the same cost.
PRELOAD = ("ray.data", "onnxruntime", "xnetmap.extract.ray_engine")


def import_ray():
    """``ray`` with Ray Data, or a UsageError (exit 2) giving the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise UsageError(
            f"--engine ray needs Ray Data, which is not installed ({err}); install it with: "
            f"{INSTALL}"
        ) from None
    return ray


def _unwrap(err: BaseException) -> BaseException:
    """The xnetmap error a Ray task raised, when there is one.

    Ray re-raises it as ``RayTaskError(ModelRejected)``, an instance of both whose
    text is the worker's traceback; its ``cause`` is the error itself, one line.
    """
    seen = 0
    while err is not None and seen < 8:
        cause = getattr(err, "cause", None)
        if not isinstance(cause, BaseException):
            cause = err.__cause__
        if isinstance(err, XnetmapError) and not isinstance(cause, XnetmapError):
            return err
        err, seen = cause, seen + 1
    return None


class RayEngine:
    """Ray Data engine. ``workers``: actors in the pool; ``threads``: CPUs per actor."""

    name = "ray"

    def __init__(self, device: str = "cpu", *, workers: int | None = None,
                 threads: int | None = None, address: str | None = None):
        self.ray = import_ray()
        if device not in ("cpu", "cuda", "auto"):
            resolve_device(device, needs_cupy=False)  # raises the usual UsageError
        self.device, self.address = device, address
        self.cpus = max(1, int(threads or 1))
        self.workers = workers
        self.model_ref = self.features_path = None

    def start(self, features_path: Path) -> None:
        """Join (or start) the cluster and put F into its object store."""
        ray = self.ray
        _quiet(ray)
        if not ray.is_initialized():
            with _preloading(PRELOAD):
                ray.init(address=self.address, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
        self.features_path = Path(features_path)
        if may_reference_external_data(self.features_path):
            self.model_ref = None  # workers open it by path (they need to read its folder)
        else:
            self.model_ref = ray.put(self.features_path.read_bytes())

    def ready(self) -> str:
        """Resolve the device against the cluster's resources; size the actor pool."""
        res = self.ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
        dev = self.device
        if dev == "auto":
            dev = "cuda" if gpus else "cpu"
        if dev == "cuda" and gpus < 1:
            raise DeviceUnavailable(
                "--device cuda --engine ray: the Ray cluster has no GPU; use --device cpu"
            )
        self.resolved = dev
        per = gpus if dev == "cuda" else max(1, cpus // self.cpus)
        self.workers = int(self.workers or per)
        if self.workers < 1:
            raise UsageError("--workers must be >= 1 with --engine ray")
        return dev

    def info(self) -> dict:
        return {"name": self.name, "ray_version": self.ray.__version__,
                "workers": self.workers, "cpus_per_worker": self.cpus}

    def feature_dim(self, known: int | None, sample_shape: Callable[[], tuple]) -> int:
        if known:
            return int(known)
        sess = make_session(self.features_path, "cpu", threads=1)  # the driver: header + 1 row
        return feature_dim(sess, known, sample_shape)

    def run(self, ds, spec, units: list[Unit]) -> Iterator[UnitResult]:
        """F of every unit, in the order Ray finishes them."""
        if not units:
            return
        rows, source = _unit_rows(ds, units)
        data = self.ray.data.from_items(rows, override_num_blocks=_n_blocks(len(units),
                                                                           self.workers))
        ctor = {"model": self.model_ref, "path": str(self.features_path),
                "device": self.resolved, "threads": self.cpus, "spec_json": spec.to_json(),
                "spec_digest": spec.digest(), "source": source}
        # Ray Data restarts a dead actor and retries its tasks (max_restarts=-1 and
        # max_task_retries=-1 are its defaults for actor pools)
        mapped = data.map_batches(
            FeatureActor, fn_constructor_kwargs=ctor, batch_size=1, batch_format="numpy",
            compute=self.ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.cpus,
            num_gpus=1 if self.resolved == "cuda" else 0,
        )
        by_start = {u.start: u for u in units}
        try:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy",
                                             prefetch_batches=1):
                for j in range(len(batch["start"])):
                    yield _result(batch, j, by_start)
        except Exception as err:  # noqa: BLE001 - a Ray error wrapping xnetmap's own
            mine = _unwrap(err)
            if mine is not None:
                raise mine from None
            raise


@contextlib.contextmanager
def _preloading(modules) -> Iterator[None]:
    """Workers of a cluster started in this block import ``modules`` as they boot.

    Ray reads ``RAY_preload_python_modules`` when it starts a node; joining a
    running cluster ignores it (that cluster's own setting applies). A value the
    user set is kept.
    """
    key = "RAY_preload_python_modules"
    had = key in os.environ
    if not had:
        os.environ[key] = ",".join(modules)
    try:
        yield
    finally:
        if not had:
            os.environ.pop(key, None)


def _quiet(ray) -> None:
    """No progress bars or per-dataset log lines on the user's terminal.

    And a worker's error reaches the driver as raised (Ray Data would wrap it in a
    ``UserCodeException`` that loses it), so the CLI reports it with its exit code.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.raise_original_map_exception = True
    ctx.enable_progress_bars = False
    for attr in ("enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    # its errors reach the user as the exception run() raises, not as logged tracebacks
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors",
                            category=UserWarning)


def _n_blocks(n_units: int, workers: int) -> int:
    """Input blocks: at least 4 per actor (load balance), at most 16 units each."""
    return max(1, min(n_units, max(4 * workers, -(-n_units // 16))))


def _unit_rows(ds, units: list[Unit]) -> tuple[list[dict], dict]:
    """One Ray row per unit (its samples: paths, or pixels) and how to read them."""
    source = getattr(ds, "_source", None)
    index = getattr(ds, "_index", None)
    arr = getattr(source, "array", None)
    if isinstance(arr, np.ndarray):
        rows = []
        for u in units:
            src = np.arange(u.start, u.stop) if index is None else index[u.start:u.stop]
            rows.append({"start": u.start, "stop": u.stop, "rows": src.astype("<i8").tobytes(),
                         "pixels": np.ascontiguousarray(arr[src]).tobytes()})
        return rows, {"kind": "array", "name": source.name, "shape": list(arr.shape[1:]),
                      "dtype": str(arr.dtype)}
    if hasattr(source, "path"):
        j = (lambda i: i) if index is None else (lambda i: int(index[i]))
        rows = [{"start": u.start, "stop": u.stop,
                 "paths": b"\0".join(os.fsencode(os.path.abspath(source.path(j(i))))
                                     for i in range(u.start, u.stop))}
                for u in units]
        return rows, {"kind": "files"}
    raise InputError(
        f"--engine ray reads image files and IDX/NPY/NPZ arrays; {type(ds).__name__} "
        f"{getattr(ds, 'location', '')} is neither: use --engine local"
    )


def _result(batch: dict, j: int, by_start: dict) -> UnitResult:
    u = by_start[int(batch["start"][j])]
    good = np.frombuffer(batch["good"][j], dtype=bool).copy()
    g = int(good.sum())
    F = np.frombuffer(batch["features"][j], dtype=np.float32).reshape(g, -1) if g else None
    bad = {int(i): reason for i, reason in json.loads(batch["bad"][j])}
    return UnitResult(u, F, good, bad)


class FeatureActor:
    """One Ray actor: decodes and preprocesses a unit's samples, runs F on them.

    Holds one onnxruntime session (:func:`xnetmap.runtime.make_session`). The
    preprocessing is rebuilt from its JSON and checked against the driver's digest,
    so both engines see the same pixels.

    NOTE: an xnetmap error in the constructor (F that this node's onnxruntime
    cannot open, another xnetmap version) is raised by the first call instead:
    Ray keeps the exception a task raises, for the driver to re-raise as is, but
    reduces an actor constructor's to the text of a traceback.
    """

    def __init__(self, model, path: str, device: str, threads: int, spec_json: str,
                 spec_digest: str, source: dict):
        self.source, self.error = source, None
        try:
            self.spec = PreprocessSpec.from_json(spec_json)
            if self.spec.digest() != spec_digest:
                raise InputError("preprocessing differs between the Ray driver and a worker; "
                                 "install the same xnetmap version on every node")
            if model is not None:
                import ray

                model = ray.get(model)
            # errors name the features file as the driver knows it (a worker has its bytes)
            sess = make_session(model if model is not None else path, device,
                                threads=threads, name=path)
            self.runner = Runner(sess, [sess.get_outputs()[0].name])
        except XnetmapError as err:
            self.error = err

    def __call__(self, batch: dict) -> dict:
        if self.error is not None:
            raise self.error
        out: dict[str, list] = {"start": [], "features": [], "good": [], "bad": []}
        for j in range(len(batch["start"])):
            pb = self._prepare(batch, j)
            F = None
            if pb.X is not None and len(pb.X):
                F = np.ascontiguousarray(self.runner(pb.X)[0], dtype=np.float32)
            out["start"].append(int(batch["start"][j]))
            out["features"].append(b"" if F is None else F.tobytes())
            out["good"].append(pb.good.tobytes())
            out["bad"].append(json.dumps(sorted(pb.bad.items())))
        return {"start": np.array(out["start"], dtype=np.int64),
                "features": np.array(out["features"], dtype=object),
                "good": np.array(out["good"], dtype=object),
                "bad": np.array(out["bad"], dtype=object)}

    def _prepare(self, batch: dict, j: int):

        start, stop = int(batch["start"][j]), int(batch["stop"][j])
        idx = np.arange(start, stop, dtype=np.int64)
        spec = self.spec
        if self.source["kind"] == "files":
            paths = [Path(os.fsdecode(p)) for p in bytes(batch["paths"][j]).split(b"\0")]
            return prepare_batch(lambda i: spec.apply(decode_image(paths[i - start])), idx,
                                 (UnreadableImage,))
        shape = (stop - start, *self.source["shape"])
        pixels = np.frombuffer(batch["pixels"][j], dtype=self.source["dtype"]).reshape(shape)
        fast = array_preparer(pixels, spec)
        if fast is not None:
            pb = fast(idx - start)
            pb.indices = idx
            return pb
        rows = np.frombuffer(batch["rows"][j], dtype="<i8")
        name = self.source["name"]
        return prepare_batch(
            lambda i: spec.apply(image_from_array(pixels[i - start], f"{name}[{rows[i - start]}]")),
            idx, (UnreadableImage,))
