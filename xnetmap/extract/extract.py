"""extract_features: run F over a dataset into a resumable, checksummed feature store.

The work is cut into shards of fixed row ranges (recorded in the manifest, so a
resumed run cuts the same way). A shard is written atomically, then the
manifest is rewritten atomically to list it with its sha256: a run killed at
any point leaves a manifest that only lists complete, verified shards. A
re-run verifies those checksums, recomputes any shard that fails (and reports
it), computes the missing ones, then writes the mask and ``"complete": true``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no lock, a concurrent writer is not detected
    fcntl = None

from ..errors import InputError, InternalError, TooManyBadImages, UsageError
from ..fsutil import atomic_write_json, file_sha256, make_output_dir
from ..runtime import Runner, cpu_count, make_session
from . import store as st
from .fastpath import array_batch_preparer
from .pipeline import prepared_batches

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
    import hashlib

    import onnx

    from ..graph.external_data import may_reference_external_data, validate_external_data

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
        from ..graph import load_model

        # a features file from anywhere: the same safety checks as any model (external
        # data inside its folder, no symlinks, checker) before onnxruntime opens it
        load_model(path, load_external_data=False)
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
                "features_sha256": features_sha, "feature_dim": None, "cut": None}
    from ..graph import split_model
    from ..graph.split_cache import split_cached

    res = split_cached(path, cut) if split_dir is None else split_model(path, split_dir, cut=cut)
    try:  # split_model verified (or just wrote) this digest; hashing again costs ~1 s/GB
        features_sha = json.loads(Path(res.json_path).read_text())["features_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        features_sha = file_sha256(res.features_path)
    features_sha = _with_external_data(Path(res.features_path), features_sha)
    return {"features_path": Path(res.features_path), "source_path": path,
            "model_sha256": res.model_sha256, "features_sha256": features_sha,
            "feature_dim": res.feature_dim, "cut": res.cut}


def _resolve_preprocess(preprocess, source_path: Path):
    """A PreprocessSpec from ``preprocess`` (spec, overrides dict, preset name or JSON)."""
    from ..data import PRESETS, PreprocessSpec
    from ..graph import model_preprocess

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
    return model_preprocess(source_path, preset=preset, overrides=overrides)


def _bad_types() -> tuple[type, ...]:
    from ..data import UnreadableImage

    return (UnreadableImage,)


def _feature_dim(sess, known: int | None, sample_shape: Callable[[], tuple]) -> int:
    out = sess.get_outputs()[0]
    if len(out.shape) != 2:
        raise UsageError(
            f"features model output {out.name!r} has shape {out.shape}; expected [N, D] "
            "(pass the full classifier or a NAME.features.onnx made by `xnetmap split`)"
        )
    if isinstance(out.shape[1], int) and out.shape[1] > 0:
        return int(out.shape[1])
    if known:
        return int(known)
    runner = Runner(sess)
    return int(runner(np.zeros((1, *sample_shape()), dtype=np.float32))[0].shape[1])


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
    model,
    dataset,
    out_dir,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int | None = None,
    dtype: str = "float32",
    max_bad: float = 0.0,
    overwrite: bool = False,
    preprocess=None,
    cut: str = "pooled",
    split_dir=None,
    progress: Callable[[int, int], Any] | None = None,
    threads: int | None = None,
    shard_rows: int | None = None,
    prefetch: int | None = None,
    preprocess_notes=(),
):
    """Run the feature extractor F of ``model`` over ``dataset`` into a feature store.

    Parameters
    ----------
    model : path
        A full classifier (split on the fly with ``cut``) or a ``NAME.features.onnx``.
    dataset : Dataset or str or path
        A :class:`xnetmap.data.Dataset` or a spec for :func:`xnetmap.data.open_dataset`.
    out_dir : path
        The store directory (created).
    device : {"cpu", "cuda", "auto"}
        ``cuda`` that cannot get onnxruntime's CUDA provider raises DeviceUnavailable.
    batch_size : int
        Images per onnxruntime call.
    workers : int, optional
        Decode/preprocess threads (default: cores).
    dtype : {"float32", "float16"}
        Storage type of the features (readers always get float32).
    max_bad : float
        Largest allowed fraction of unreadable images (0 = none allowed).
    overwrite : bool
        Replace a store made from another model, dataset or preprocessing.
    preprocess : PreprocessSpec or dict or str, optional
        Default: the model's ``xnetmap.preprocess`` metadata. A dict is a set of
        overrides (key ``"preset"`` picks a preset); a str a preset name or spec JSON.
    cut, split_dir
        Passed to :func:`xnetmap.graph.split_model` for a full classifier.
    progress : callable, optional
        ``progress(done_rows, total_rows)`` after every batch (rows of this run).
    threads : int, optional
        onnxruntime intra-op threads (default: cores).
    preprocess_notes : sequence of str
        What was assumed to get ``preprocess`` (recorded in the manifest).
    shard_rows : int, optional
        Rows per shard for a new store (default: ~64 MiB of features, a multiple of
        ``batch_size``). A resumed store keeps its own.
    prefetch : int, optional
        Batches decoded ahead at most (default ``2 * workers``).

    Notes
    -----
    Array datasets (IDX, .npy, .npz) whose images already have the input size are
    preprocessed a batch at a time (bit-identical to the per-image path). A resumed
    run keeps the store's shard boundaries; batches never cross a shard, so rerunning
    with the same ``batch_size`` reproduces the same bytes. NOTE: resuming with another
    ``batch_size`` may change the last bits of the remaining rows (onnxruntime kernels
    can depend on the batch size); the store stays valid.

    Returns
    -------
    FeatureStore
        ``store.run`` reports: ``reused``, ``resumed_shards``, ``recomputed_shards``
        (failed their checksum), ``computed_rows``, ``n_bad``, ``nonfinite``,
        ``zero_norm``, ``seconds``, ``setup_seconds`` (before the first batch), ``notes``.

    Raises
    ------
    UsageError
        Bad arguments, or ``out_dir`` holds a store of another model/dataset/preprocessing
        (exit 2) and ``overwrite`` is False.
    DeviceUnavailable
        CUDA requested but not obtained.
    TooManyBadImages
        More than ``max_bad`` of the images are unreadable (exit 4).
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if not 0.0 <= float(max_bad) <= 1.0:
        raise UsageError(f"--max-bad must be a fraction in [0, 1], got {max_bad}")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    from .. import __version__
    from ..data import open_dataset

    ds = dataset if hasattr(dataset, "fingerprint") else open_dataset(dataset)
    m = _resolve_model(model, cut, split_dir)
    # onnxruntime builds the session (C++, GIL released) while this thread reads the
    # preprocessing metadata and fingerprints the dataset.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="xnetmap-session") as pool:
        pending = pool.submit(make_session, m["features_path"], device, threads=threads)
        spec, notes = _resolve_preprocess(preprocess, m["source_path"])
        notes = [*notes, *preprocess_notes]  # what was assumed: recorded in the manifest
        fingerprint = ds.fingerprint()
        sess = pending.result()  # re-raises DeviceUnavailable / ModelRejected
    n = len(ds)
    spec_json = spec.to_json()
    identity = {
        "model_sha256": m["model_sha256"],
        "features_sha256": m["features_sha256"],
        "dataset_fingerprint": fingerprint,
        "preprocess_digest": spec.digest(),
        "dtype": dtype,
        "n": n,
    }
    out = make_output_dir(out_dir, "store folder")
    with _environment_errors(out), _store_lock(out):
        old = st.read_manifest(out) if not overwrite else None
        if old is not None:
            diff = [k for k in IDENTITY if old.get(k) != identity[k]]
            if diff:
                raise UsageError(
                    f"{out} holds features of another "
                    + ", ".join(f"{k} ({old.get(k)!s:.16} != {identity[k]!s:.16})" for k in diff)
                    + "; use --overwrite to replace it, or another -o"
                )
        else:
            _clean_store_dir(out)  # overwrite, or leftovers of a run killed before its manifest

        run: dict = {"reused": False, "resumed_shards": 0, "recomputed_shards": [],
                     "computed_rows": 0, "notes": list(notes), "device": sess.xnetmap_device}
        for p in out.glob(".*.tmp"):
            p.unlink()  # temp files of a killed run

        if old is not None:
            run["notes"] += _repair_side_files(out, old, ds)
            shard_rows = int(old["shard_rows"])
            dim = int(old["dim"])
            done = {int(s["index"]): s for s in old["shards"]}
            bad_shards = [k for k, s in done.items()
                          if not (out / s["file"]).exists()
                          or file_sha256(out / s["file"]) != s["sha256"]]
            for k in bad_shards:
                del done[k]
            run["recomputed_shards"] = sorted(bad_shards)
            run["resumed_shards"] = len(done)
            if old.get("complete") and not bad_shards:
                store = st.FeatureStore.open(out)
                run.update(reused=True, seconds=time.perf_counter() - t0, **_totals(old))
                store.run = run
                return store
            manifest = dict(old)
        else:
            dim = None
            done = {}
            manifest = None
        if dim is None:
            dim = _feature_dim(sess, m["feature_dim"], lambda: spec.apply(_first_image(ds)).shape)
        if shard_rows is None:
            per = max(1, SHARD_BYTES // (dim * np.dtype(dtype).itemsize))
            shard_rows = max(batch_size, per // batch_size * batch_size)
        shard_rows = int(shard_rows)
        if shard_rows < 1:
            raise UsageError(f"shard_rows must be >= 1, got {shard_rows}")
        if manifest is None:
            manifest = {
                "format": st.FORMAT, "format_version": st.FORMAT_VERSION,
                "xnetmap_version": __version__, **identity,
                "model_path": str(model), "features_path": str(m["features_path"]),
                "cut": m["cut"], "dataset": _describe(ds), "preprocess": json.loads(spec_json),
                "dim": dim, "shard_rows": shard_rows, "labeled": ds.labels is not None,
                "preprocess_notes": list(notes),
                "shards": [], "complete": False,
            }
            atomic_write_bytes_json(out / st.IDS, list(ds.ids))
            if ds.labels is not None:
                st.atomic_save_npy(out / st.LABELS, np.asarray(ds.labels, dtype=np.int64))
            atomic_write_json(out / st.MANIFEST, manifest)
        else:
            manifest["complete"] = False
            manifest["shards"] = [done[k] for k in sorted(done)]
            atomic_write_json(out / st.MANIFEST, manifest)

        plan = _shard_plan(n, shard_rows)
        todo = [k for k in range(len(plan)) if k not in done]
        already_bad = sum(len(s["bad"]) for s in done.values())
        allowed = float(max_bad) * n
        if already_bad > allowed:
            raise TooManyBadImages(_too_many(already_bad, n, max_bad, out))
        total = sum(plan[k][1] - plan[k][0] for k in todo)
        if progress is not None:
            progress(0, total)
        n_workers = cpu_count() if workers is None else int(workers)
        load = _loader(ds, spec)

        def batches():
            for k in todo:
                a, b = plan[k]
                for s in range(a, b, batch_size):
                    yield np.arange(s, min(s + batch_size, b), dtype=np.int64)

        runner = Runner(sess, [sess.get_outputs()[0].name])
        run["setup_seconds"] = time.perf_counter() - t0  # split, digests, session, manifest
        n_bad = already_bad
        finished = 0
        cur_k, buf, valid, bad = None, None, None, {}
        pos = 0
        todo_iter = iter(todo)
        for pb in prepared_batches(load, batches(), workers=n_workers, prefetch=prefetch,
                                   bad_types=_bad_types(), prepare=array_batch_preparer(ds, spec)):
            if cur_k is None:
                cur_k = next(todo_iter)
                a, b = plan[cur_k]
                buf = np.zeros((b - a, dim), dtype=np.float32)
                valid = np.zeros(b - a, dtype=bool)
                bad, pos = {}, 0
            a, b = plan[cur_k]
            rows = len(pb.indices)
            if pb.X is not None and len(pb.X):
                F = runner(pb.X)[0]
                if F.shape != (len(pb.X), dim):
                    raise UsageError(
                        f"features model {m['features_path']} gave shape {F.shape} for a batch of "
                        f"{len(pb.X)}; expected ({len(pb.X)}, {dim})"
                    )
                sel = pos + np.nonzero(pb.good)[0]
                buf[sel] = F
                valid[sel] = True
            bad.update(pb.bad)
            n_bad += len(pb.bad)
            if n_bad > allowed:
                raise TooManyBadImages(
                    _too_many(n_bad, n, max_bad, out, pb.bad or bad, ds.ids)
                )
            pos += rows
            finished += rows
            if pos == b - a:
                entry = _write_shard(out, cur_k, a, b, buf, valid, bad, dtype, ds)
                done[cur_k] = entry
                manifest["shards"] = [done[k] for k in sorted(done)]
                atomic_write_json(out / st.MANIFEST, manifest)
                run["computed_rows"] += b - a
                cur_k = None
            if progress is not None:
                progress(finished, total)
        if len(done) != len(plan):
            raise InternalError(f"{len(done)} of {len(plan)} shards written")
        _finish(out, manifest, plan, ds)
        store = st.FeatureStore.open(out)
        run.update(seconds=time.perf_counter() - t0, **_totals(store.manifest))
        store.run = run
        return store


def _ids_text(ids) -> str:
    return json.dumps(list(ids), separators=(",", ":")) + "\n"


def atomic_write_bytes_json(path: Path, obj) -> None:
    """Compact JSON (ids lists can be long), atomically."""
    from ..fsutil import atomic_write_text

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
    from ..data import UnreadableImage

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


def _loader(ds, spec):
    def load(i: int) -> np.ndarray:
        return spec.apply(ds.load(i))

    return load


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

