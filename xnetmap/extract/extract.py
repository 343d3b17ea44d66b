"""extract_features: run F over a dataset into a resumable, checksummed feature store.

The work is cut into shards of fixed row ranges (recorded in the manifest, so a
resumed run cuts the same way). A shard is written atomically, then the
manifest is rewritten atomically to list it with its sha256: a run killed at
any point leaves a manifest that only lists complete, verified shards. A
re-run verifies those checksums, recomputes any shard that fails (and reports
it), computes the missing ones, then writes the mask and ``"complete": true``.

Three stages: plan (model, dataset, preprocessing, store identity), compute (an
engine of :mod:`xnetmap.extract.engines` turns the shards' batches into
features: ``local`` threads or a ``ray`` cluster), write (one protocol for every
engine: :class:`_ShardWriter`, then :func:`_finish`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no lock, a concurrent writer is not detected
    fcntl = None

from .. import __version__
from ..data import PRESETS, PreprocessSpec, UnreadableImage, open_dataset
from ..errors import InputError, InternalError, TooManyBadImages, UsageError
from ..fsutil import atomic_write_json, atomic_write_text, file_sha256, make_output_dir
from ..graph import load_model, model_preprocess, split_model
from ..graph.external_data import may_reference_external_data, validate_external_data
from ..graph.split_cache import split_cached
from . import store as st
from .engines import ENGINES, LocalEngine, units_of
from .ray_engine import RayEngine

DTYPES = ("float32", "float16")
#: Target bytes of one shard (features only); rows are a multiple of the batch size.
SHARD_BYTES = 64 << 20
LOCK = ".xnetmap-extract.lock"
_STORE_FILE = re.compile(
    r"^(manifest\.json|ids\.json|labels\.npy|mask\.npy|shard-\d{5}\.npy|\..*\.tmp"
    r"|\.xnetmap-extract\.lock)$"
)
#: Fields that must match between a store on disk and a new request.
IDENTITY = ("model_sha256", "features_sha256", "dataset_fingerprint", "preprocess_digest",
            "dtype", "n")


def _with_external_data(path: Path, digest: str) -> str:
    """``digest`` (of the ``.onnx`` bytes) extended with the content of the external data
    files the model references, so that new weights under the same ``.onnx`` file give a
    new store identity. Unchanged for a model without external data."""
    import onnx

    if not may_reference_external_data(path):
        return digest  # a cheap byte scan instead of parsing the whole model again
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - make_session reports an unreadable model plainly
        return digest
    files = sorted({ref.path for ref in validate_external_data(proto, path)})
    if not files:
        return digest
    h = hashlib.sha256(f"xnetmap-model+data-v1\0{digest}\n".encode())
    for f in files:
        h.update(f"{f.relative_to(path.parent)}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _resolve_model(model, cut: str, split_dir) -> dict:
    """Features model path and digests for ``model`` (split on the fly unless already F)."""
    path = Path(model)
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.name.endswith(".features.onnx"):
        # a features file from anywhere: the same safety checks as any model (external
        # data inside its folder, no symlinks, checker) before onnxruntime opens it
        proto = load_model(path, load_external_data=False)
        plain_sha = file_sha256(path)
        features_sha = _with_external_data(path, plain_sha)
        model_sha = features_sha
        source = path
        split_json = path.with_name(path.name[: -len(".features.onnx")] + ".split.json")
        if split_json.exists():
            try:
                info = json.loads(split_json.read_text())
                if info.get("features_sha256") in (None, plain_sha):
                    model_sha = info.get("model_sha256", model_sha)
                src = info.get("model_path")
                if src and Path(src).exists():
                    source = Path(src)
            except (OSError, ValueError):
                pass
        return {"features_path": path, "source_path": source, "model_sha256": model_sha,
                "features_sha256": features_sha, "feature_dim": _declared_dim(proto),
                "cut": None, "proto": proto if source == path else None}

    res = split_cached(path, cut) if split_dir is None else split_model(path, split_dir, cut=cut)
    try:  # split_model verified (or just wrote) this digest; hashing again costs ~1 s/GB
        features_sha = json.loads(Path(res.json_path).read_text())["features_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        features_sha = file_sha256(res.features_path)
    features_sha = _with_external_data(Path(res.features_path), features_sha)
    return {"features_path": Path(res.features_path), "source_path": path,
            "model_sha256": res.model_sha256, "features_sha256": features_sha,
            "feature_dim": res.feature_dim, "cut": res.cut}


def _declared_dim(proto) -> int | None:
    """D of F's first output when declared ``[N, D]``; else None (a session finds it).

    The value a session would report, read without one: the Ray driver then never
    loads F into onnxruntime (only its workers do).
    """
    outs = proto.graph.output
    dims = outs[0].type.tensor_type.shape.dim if len(outs) else []
    if len(dims) != 2 or not dims[1].HasField("dim_value") or dims[1].dim_value < 1:
        return None
    return int(dims[1].dim_value)


def _resolve_preprocess(preprocess, source_path: Path, proto=None):
    """A PreprocessSpec from ``preprocess`` (spec, overrides dict, preset name or JSON);
    ``proto``: ``source_path`` already loaded (not parsed again)."""

    if isinstance(preprocess, PreprocessSpec):
        return preprocess, []
    preset, overrides = None, None
    if isinstance(preprocess, dict):
        overrides = dict(preprocess)
        preset = overrides.pop("preset", None)
    elif isinstance(preprocess, str):
        if preprocess in PRESETS:
            preset = preprocess
        else:
            try:
                return PreprocessSpec.from_json(preprocess), []
            except Exception as err:
                raise UsageError(
                    f"preprocess {preprocess!r} is neither a preset ({', '.join(PRESETS)}) "
                    f"nor preprocessing JSON: {err}"
                ) from err
    elif preprocess is not None:
        raise UsageError(f"preprocess must be a PreprocessSpec, dict or str, got {preprocess!r}")
    return model_preprocess(source_path, preset=preset, overrides=overrides, proto=proto)


@contextlib.contextmanager
def _store_lock(out: Path):
    """Hold an exclusive lock on the store for this run; refuse a concurrent writer."""
    if fcntl is None:
        yield
        return
    fh = open(out / LOCK, "a+b")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise UsageError(
                f"another `xnetmap extract` is writing {out} right now; wait for it to finish "
                "or use another -o"
            ) from err
        yield
    finally:
        fh.close()  # releases the lock


#: errno values that mean "this folder cannot take the store", not a bug.
_ENV_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT,
               errno.EISDIR, errno.ENOTDIR}


@contextlib.contextmanager
def _environment_errors(out: Path):
    """Turn a full, read-only or blocked store folder into one clear error (exit 2)."""
    try:
        yield
    except OSError as err:
        if err.errno not in _ENV_ERRNOS:
            raise
        raise InputError(
            f"cannot write the feature store {out}: {err.strerror} ({err.filename or out}); "
            "free space or fix permissions and re-run the same command to resume, or use "
            "another -o"
        ) from None


def _clean_store_dir(out: Path) -> None:
    """Remove a store's files; refuse a directory holding anything else."""
    foreign = [p.name for p in out.iterdir() if not _STORE_FILE.match(p.name)]
    if foreign:
        raise UsageError(
            f"{out} contains files that are not part of a feature store ({', '.join(foreign[:3])}"
            f"{'...' if len(foreign) > 3 else ''}); choose another -o"
        )
    manifest = out / st.MANIFEST
    if manifest.exists():
        manifest.unlink()  # first: the directory stops being a store before its parts go
    for p in out.iterdir():
        if p.name != LOCK:
            p.unlink()


def _shard_rows(dim: int, dtype: str, batch_size: int, shard_rows: int | None) -> int:
    """Rows per shard of a new store: ``shard_rows``, else ~SHARD_BYTES in whole batches."""
    if shard_rows is None:
        per = max(1, SHARD_BYTES // (dim * np.dtype(dtype).itemsize))
        shard_rows = max(batch_size, per // batch_size * batch_size)
    if int(shard_rows) < 1:
        raise UsageError(f"shard_rows must be >= 1, got {shard_rows}")
    return int(shard_rows)


def _decode_ahead(eng, job, out: Path, overwrite: bool, batch_size: int, shard_rows) -> None:
    """Let the engine decode a new store's first batches while its session opens.

    Only where those batches are known before the store is opened: a new store (or
    ``overwrite``) of a model whose F declares its width. The engine checks them
    against the units it is finally given (and drops them if they differ).
    """
    dim = job.m.get("feature_dim")
    if not hasattr(eng, "decode_ahead") or not dim or job.n == 0:
        return
    try:
        if not overwrite and st.read_manifest(out) is not None:
            return  # resumed or reused: other units, or none
    except InputError:
        return  # opening the store reports it
    plan = _shard_plan(job.n, _shard_rows(int(dim), job.identity["dtype"], batch_size,
                                          shard_rows))
    eng.decode_ahead(job.ds, job.spec, units_of(plan, [0], batch_size))


def _shard_plan(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)] if n else []


def _row_stats(F: np.ndarray, valid: np.ndarray, start: int) -> dict:
    """Non-finite and zero-norm rows among the valid rows of one shard."""
    finite = np.isfinite(F).all(axis=1)
    nonfinite = np.nonzero(valid & ~finite)[0]
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", F, F, dtype=np.float64))
    zero = np.nonzero(valid & finite & (norms == 0))[0]
    return {"nonfinite": [int(start + i) for i in nonfinite],
            "zero_norm": [int(start + i) for i in zero]}


def extract_features(
    model, dataset, out_dir, *, device: str = "cpu", batch_size: int = 64,
    workers: int | None = None, dtype: str = "float32", max_bad: float = 0.0,
    overwrite: bool = False, preprocess=None, cut: str = "pooled", split_dir=None,
    progress: Callable[[int, int], Any] | None = None, threads: int | None = None,
    shard_rows: int | None = None, prefetch: int | None = None, split=None,
    engine: str = "local", ray_address: str | None = None, preprocess_notes=(),
):
    """Run the feature extractor F of ``model`` over ``dataset`` into a feature store.

    Parameters
    ----------
    model : path
        A full classifier (split with ``cut`` into ``split_dir``, default the cache) or a
        ``NAME.features.onnx``; with ``split``, the source model (recorded only).
    dataset, out_dir : Dataset or str or path; path
        Images (a spec for :func:`xnetmap.data.open_dataset`); the store (created, resumed
        when of the same identity, replaced with ``overwrite``).
    device, batch_size, dtype, max_bad, threads, shard_rows
        ``cpu``/``cuda``/``auto``; images per onnxruntime call; storage ``float32`` or
        ``float16``; largest fraction of unreadable images; intra-op threads (``ray``:
        CPUs per actor, default 1); rows per shard of a new store (default ~64 MiB).
    workers, prefetch
        ``local``: decode threads (default: cores), batches decoded ahead. ``ray``:
        actors (default: one per CPU, or per GPU with ``cuda``).
    preprocess, preprocess_notes : PreprocessSpec or dict or str, optional; list of str
        Default: the model's metadata; overrides (``"preset"`` picks one), a preset, JSON.
        The notes say what was assumed to get it (recorded in the manifest).
    progress : callable, optional
        ``progress(done_rows, total_rows)`` after every batch of this run.
    split : SplitResult, optional
        The split of ``model`` made in this run: used as is (no ``split.json`` re-read).
    engine, ray_address : str
        ``local`` (threads here) or ``ray`` (Ray Data, ``pip install 'xnetmap[ray]'``) on
        the cluster at ``ray_address`` (``auto``, ``ray://...``; default: the one joined,
        else a new local one). The same bytes either way.

    Returns
    -------
    FeatureStore
        ``store.run`` says what the run did (reused, resumed/recomputed shards, rows...).

    Raises UsageError (exit 2): bad arguments, a store of another identity without
    ``overwrite``, Ray not installed, CUDA not obtained; TooManyBadImages (exit 4).
    """
    t0 = time.perf_counter()
    _check_args(batch_size, dtype, max_bad, workers)
    eng = make_engine(engine, device, workers=workers, threads=threads, prefetch=prefetch,
                      ray_address=ray_address)
    try:
        job = _plan(model, dataset, split, cut, split_dir, preprocess, eng, dtype)
        job.notes += list(preprocess_notes)  # what was assumed: recorded in the manifest
        _decode_ahead(eng, job, Path(out_dir), overwrite, batch_size, shard_rows)
        job.device = eng.ready()  # re-raises DeviceUnavailable / ModelRejected
        return _extract(job, eng, out_dir, overwrite, batch_size, max_bad, shard_rows,
                        progress, t0)
    finally:
        getattr(eng, "close", lambda: None)()


def _extract(job, eng, out_dir, overwrite: bool, batch_size: int, max_bad: float, shard_rows,
             progress, t0: float):
    """The store part of :func:`extract_features`, once the engine is ready."""
    out = make_output_dir(out_dir, "store folder")
    with _environment_errors(out), _store_lock(out):
        old, done, recomputed = _open_store(out, job, overwrite)
        run: dict = {"reused": not (old is None or not old.get("complete") or recomputed),
                     "resumed_shards": len(done), "recomputed_shards": recomputed,
                     "notes": job.notes, "device": job.device, "engine": eng.info()}
        if not run["reused"]:
            manifest = _start_manifest(out, job, old, done, eng, shard_rows, batch_size)
            run["setup_seconds"] = time.perf_counter() - t0  # split, digests, session, manifest
        run["computed_rows"] = 0 if run["reused"] else _compute(
            out, job, manifest, done, eng, batch_size, max_bad, progress)
        store = st.FeatureStore.open(out)
        run.update(seconds=time.perf_counter() - t0, **_totals(store.manifest))
        store.run = run
        return store


def make_engine(engine: str, device: str, *, workers: int | None = None,
                threads: int | None = None, prefetch: int | None = None,
                ray_address: str | None = None):
    """The engine named ``engine`` (``local`` or ``ray``).

    Raises
    ------
    UsageError
        Unknown engine, ``ray_address`` without ``ray``, or ``ray`` without Ray
        installed (exit 2, with the install command).
    """
    if engine == "local":
        if ray_address is not None:
            raise UsageError("--ray-address needs --engine ray")
        return LocalEngine(device, workers=workers, threads=threads, prefetch=prefetch)
    if engine == "ray":
        return RayEngine(device, workers=workers, threads=threads, address=ray_address)
    raise UsageError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")


def _compute(out: Path, job, manifest: dict, done: dict, eng, batch_size: int, max_bad: float,
             progress) -> int:
    """Compute the shards missing from ``done`` with ``eng``, write them, finish the store.

    Returns the number of rows computed.
    """
    plan = _shard_plan(job.n, int(manifest["shard_rows"]))
    todo = [k for k in range(len(plan)) if k not in done]
    writer = _ShardWriter(out, job, manifest, plan, done, max_bad, progress)
    units = units_of(plan, todo, batch_size)
    writer.begin(sum(u.stop - u.start for u in units))
    for result in eng.run(job.ds, job.spec, units):
        writer.add(result)
    if len(done) != len(plan):
        raise InternalError(f"{len(done)} of {len(plan)} shards written")
    _finish(out, manifest, plan, job.ds)
    return writer.computed_rows


def _check_args(batch_size: int, dtype: str, max_bad: float, workers: int | None) -> None:
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if not 0.0 <= float(max_bad) <= 1.0:
        raise UsageError(f"--max-bad must be a fraction in [0, 1], got {max_bad}")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")


@dataclass
class _Job:
    """What one run extracts: dataset, preprocessing, F and the store identity."""

    model: Any
    ds: Any
    spec: Any
    m: dict
    identity: dict
    notes: list
    device: str | None

    @property
    def n(self) -> int:
        return int(self.identity["n"])


def _plan(model, dataset, split, cut, split_dir, preprocess, eng, dtype: str) -> _Job:
    """Resolve model, dataset and preprocessing; the engine starts up meanwhile (the
    caller waits for it: ``job.device`` is None until then)."""
    ds = dataset if hasattr(dataset, "fingerprint") else open_dataset(dataset)
    m = _model_from_split(split) if split is not None else _resolve_model(model, cut, split_dir)
    # the engine opens its session / joins its cluster while this thread reads the
    # preprocessing metadata and fingerprints the dataset
    eng.start(m["features_path"])
    spec, notes = _resolve_preprocess(preprocess, m["source_path"], m.pop("proto", None))
    fingerprint = ds.fingerprint()
    identity = {
        "model_sha256": m["model_sha256"],
        "features_sha256": m["features_sha256"],
        "dataset_fingerprint": fingerprint,
        "preprocess_digest": spec.digest(),
        "dtype": dtype,
        "n": len(ds),
    }
    return _Job(model, ds, spec, m, identity, list(notes), None)


def _model_from_split(split) -> dict:
    """The features model of a split made in this run (no split.json re-read)."""
    features = Path(split.features_path)
    features_sha = getattr(split, "features_sha256", None) or file_sha256(features)
    return {"features_path": features, "source_path": Path(split.model_path),
            "model_sha256": split.model_sha256,
            "features_sha256": _with_external_data(features, features_sha),
            "feature_dim": getattr(split, "feature_dim", None),
            "cut": getattr(split, "cut", None)}


def _open_store(out: Path, job: _Job, overwrite: bool):
    """The store's manifest to resume (or None), its verified shards, and the failed ones.

    Refuses a store of another identity unless ``overwrite``; cleans leftovers.
    """
    old = st.read_manifest(out) if not overwrite else None
    if old is not None:
        diff = [k for k in IDENTITY if old.get(k) != job.identity[k]]
        if diff:
            raise UsageError(
                f"{out} holds features of another "
                + ", ".join(f"{k} ({old.get(k)!s:.16} != {job.identity[k]!s:.16})"
                            for k in diff)
                + "; use --overwrite to replace it, or another -o"
            )
    else:
        _clean_store_dir(out)  # overwrite, or leftovers of a run killed before its manifest
    for p in out.glob(".*.tmp"):
        p.unlink()  # temp files of a killed run
    if old is None:
        return None, {}, []
    job.notes += _repair_side_files(out, old, job.ds)
    done = {int(s["index"]): s for s in old["shards"]}
    failed = [k for k, s in done.items()
              if not (out / s["file"]).exists() or file_sha256(out / s["file"]) != s["sha256"]]
    for k in failed:
        del done[k]
    return old, done, sorted(failed)


def _start_manifest(out: Path, job: _Job, old, done: dict, eng, shard_rows, batch_size) -> dict:
    """Write the manifest this run starts from (incomplete): resumed, or new with ids/labels."""
    if old is not None:
        manifest = dict(old)
        manifest.update(complete=False, shards=[done[k] for k in sorted(done)],
                        engine=eng.info())
        atomic_write_json(out / st.MANIFEST, manifest)
        return manifest
    ds, dtype = job.ds, job.identity["dtype"]
    dim = eng.feature_dim(job.m["feature_dim"], lambda: job.spec.apply(_first_image(ds)).shape)
    shard_rows = _shard_rows(dim, dtype, batch_size, shard_rows)
    manifest = {
        "format": st.FORMAT, "format_version": st.FORMAT_VERSION,
        "xnetmap_version": __version__, **job.identity,
        "model_path": str(job.model), "features_path": str(job.m["features_path"]),
        "cut": job.m["cut"], "dataset": _describe(ds), "preprocess": json.loads(job.spec.to_json()),
        "dim": dim, "shard_rows": int(shard_rows), "labeled": ds.labels is not None,
        "engine": eng.info(), "preprocess_notes": list(job.notes),
        "shards": [], "complete": False,
    }
    atomic_write_bytes_json(out / st.IDS, list(ds.ids))
    if ds.labels is not None:
        st.atomic_save_npy(out / st.LABELS, np.asarray(ds.labels, dtype=np.int64))
    atomic_write_json(out / st.MANIFEST, manifest)
    return manifest


class _ShardWriter:
    """Assembles units into shards (in any order) and writes each shard once it is full.

    A shard is written atomically, then the manifest is rewritten atomically to list
    it. A unit that arrives twice (a task retried after a worker died) is ignored.
    """

    def __init__(self, out: Path, job: _Job, manifest: dict, plan, done: dict,
                 max_bad: float, progress):
        self.out, self.job, self.manifest, self.plan, self.done = out, job, manifest, plan, done
        self.max_bad, self.progress = float(max_bad), progress
        self.dim = int(manifest["dim"])
        self.allowed = self.max_bad * job.n
        self.n_bad = sum(len(s["bad"]) for s in done.values())
        self.parts: dict[int, dict] = {}
        self.finished = self.total = self.computed_rows = 0
        if self.n_bad > self.allowed:
            raise TooManyBadImages(_too_many(self.n_bad, job.n, self.max_bad, out))

    def begin(self, total: int) -> None:
        self.total = total
        if self.progress is not None:
            self.progress(0, total)

    def _part(self, k: int) -> dict:
        part = self.parts.get(k)
        if part is None:
            a, b = self.plan[k]
            part = {"buf": np.zeros((b - a, self.dim), dtype=np.float32),
                    "valid": np.zeros(b - a, dtype=bool), "bad": {}, "seen": set(), "rows": 0}
            self.parts[k] = part
        return part

    def add(self, r) -> None:
        """Place one :class:`~xnetmap.extract.engines.UnitResult`; write its shard if full."""
        u = r.unit
        a, b = self.plan[u.k]
        part = self._part(u.k)
        if u.start in part["seen"] or u.k in self.done:
            return
        if r.F is not None:
            g = int(np.count_nonzero(r.good))
            if r.F.shape != (g, self.dim):
                raise UsageError(
                    f"features model {self.job.m['features_path']} gave shape {r.F.shape} for a "
                    f"batch of {g}; expected ({g}, {self.dim})"
                )
            sel = u.start - a + np.nonzero(r.good)[0]
            part["buf"][sel] = r.F
            part["valid"][sel] = True
        part["bad"].update(r.bad)
        self.n_bad += len(r.bad)
        if self.n_bad > self.allowed:
            raise TooManyBadImages(_too_many(self.n_bad, self.job.n, self.max_bad, self.out,
                                             r.bad or part["bad"], self.job.ds.ids))
        part["seen"].add(u.start)
        part["rows"] += u.stop - u.start
        self.finished += u.stop - u.start
        if part["rows"] == b - a:
            self._write(u.k)
        if self.progress is not None:
            self.progress(self.finished, self.total)

    def _write(self, k: int) -> None:
        a, b = self.plan[k]
        part = self.parts.pop(k)
        self.done[k] = _write_shard(self.out, k, a, b, part["buf"], part["valid"], part["bad"],
                                    self.job.identity["dtype"], self.job.ds)
        self.manifest["shards"] = [self.done[i] for i in sorted(self.done)]
        atomic_write_json(self.out / st.MANIFEST, self.manifest)
        self.computed_rows += b - a

def _ids_text(ids) -> str:
    return json.dumps(list(ids), separators=(",", ":")) + "\n"


def atomic_write_bytes_json(path: Path, obj) -> None:
    """Compact JSON (ids lists can be long), atomically."""
    atomic_write_text(path, _ids_text(obj))


def _mask_from(manifest: dict) -> np.ndarray:
    mask = np.zeros(int(manifest["n"]), dtype=bool)
    for s in manifest["shards"]:
        for i, _sid, _reason in s["bad"]:
            mask[int(i)] = True
    return mask


def _repair_side_files(out: Path, manifest: dict, ds) -> list[str]:
    """Rewrite ids.json, labels.npy (and mask.npy of a complete store) when they are
    missing or differ from what the dataset (same fingerprint) and the manifest say.

    The manifest checksums only the shards; these small files are derived from the
    dataset and the manifest, so a resumed or reused store rebuilds them instead of
    handing out misaligned ids, labels or mask. Returns one note per file rewritten.
    """
    notes = []

    def differs(path: Path, same) -> bool:
        try:
            return not same(path)
        except (OSError, ValueError):
            return True

    ids_path = out / st.IDS
    if differs(ids_path, lambda p: p.read_text() == _ids_text(ds.ids)):
        atomic_write_bytes_json(ids_path, list(ds.ids))
        notes.append(f"{ids_path} was missing or did not match the dataset; rewrote it")
    labels_path = out / st.LABELS
    if ds.labels is not None:
        want = np.asarray(ds.labels, dtype=np.int64)
        if differs(labels_path,
                   lambda p: np.array_equal(np.load(p, allow_pickle=False), want)):
            st.atomic_save_npy(labels_path, want)
            notes.append(f"{labels_path} was missing or did not match the dataset; rewrote it")
    if manifest.get("complete"):
        mask = _mask_from(manifest)
        mask_path = out / st.MASK
        if differs(mask_path,
                   lambda p: np.array_equal(np.load(p, allow_pickle=False), mask)):
            st.atomic_save_npy(mask_path, mask)
            notes.append(f"{mask_path} was missing or did not match the manifest; rewrote it")
    return notes


def _first_image(ds):
    for i in range(len(ds)):
        try:
            return ds.load(i)
        except UnreadableImage:
            continue
    raise TooManyBadImages(f"none of the {len(ds)} images of the dataset can be read")


def _describe(ds) -> str:
    try:
        return ds.describe()
    except Exception:
        return f"{type(ds).__name__} of {len(ds)} samples"


def _write_shard(out, k, a, b, buf, valid, bad, dtype, ds) -> dict:
    arr = buf if dtype == "float32" else buf.astype(dtype)
    stats = _row_stats(arr, valid, a)  # after the cast: float16 can overflow to inf
    name = st.shard_name(k)
    sha = st.atomic_save_npy(out / name, arr)
    ids = ds.ids
    return {
        "index": k, "file": name, "start": a, "stop": b, "sha256": sha,
        "bad": [[int(i), ids[int(i)], reason] for i, reason in sorted(bad.items())],
        "nonfinite": stats["nonfinite"][:1000], "n_nonfinite": len(stats["nonfinite"]),
        "zero_norm": stats["zero_norm"][:1000], "n_zero_norm": len(stats["zero_norm"]),
        "conversions": ds.conversion_counts(a, b) if hasattr(ds, "conversion_counts") else {},
    }


def _finish(out: Path, manifest: dict, plan, ds) -> None:
    mask = _mask_from(manifest)
    bad = [{"index": i, "id": sid, "reason": reason}
           for s in manifest["shards"] for i, sid, reason in s["bad"]]
    st.atomic_save_npy(out / st.MASK, mask)
    manifest["bad"] = bad
    manifest["conversions"] = _sum_counts(s.get("conversions", {}) for s in manifest["shards"])
    manifest.update({f"total_{k}": v for k, v in _totals(manifest).items()})
    manifest["complete"] = True
    atomic_write_json(out / st.MANIFEST, manifest)


def _sum_counts(dicts) -> dict:
    total: dict = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def _totals(manifest: dict) -> dict:
    shards = manifest["shards"]
    return {
        "n_bad": sum(len(s["bad"]) for s in shards),
        "nonfinite": sum(s["n_nonfinite"] for s in shards),
        "zero_norm": sum(s["n_zero_norm"] for s in shards),
    }


def _too_many(n_bad: int, n: int, max_bad: float, out: Path, examples=None, ids=None) -> str:
    ex = ""
    if examples:
        i, reason = next(iter(sorted(examples.items())))
        name = f"sample {i}" if ids is None else f"sample {i} ({ids[int(i)]})"
        ex = f" (e.g. {name}: {reason})"
    return (
        f"{n_bad} of {n} images are unreadable ({n_bad / max(n, 1):.2%}){ex}, more than "
        f"--max-bad {max_bad:g} allows; fix or remove them, or raise --max-bad. The shards "
        f"written so far in {out} are kept for a resumed run"
    )

