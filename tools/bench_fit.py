"""Benchmark the map fit on synthetic features with a planted affine relation.

    nice -n 10 python tools/bench_fit.py                  # both default sizes, stores on disk
    python tools/bench_fit.py --n 100000 --d-in 256 --d-out 384   # one quick size
    python tools/bench_fit.py --in-memory --n 200000       # arrays in memory (old mode)

By default the features are written as two real feature stores (64 MB shards,
the extractor's layout) in a temporary folder and the fit reads them from disk
(``AffineMap.fit_stores`` with its defaults: warm start from lstsq, hold-out
10 %), at 800,000 x 512 -> 768 and at 200,000 x 1,536 -> 2,048. For each size
it prints: the gd epochs (training pass, with evaluation); the time of the two
GEMMs an epoch needs (forward ``A W^T`` and gradient ``G^T A`` over the same
batch shapes, from memory, timed between epochs under the same load); peak RSS
and the peak of its anonymous part during the fit (sampled every 20 ms; the
memory maps' page cache is not anonymous); with ``--lstsq`` the closed form
alone. The LAST line is the worst ratio epoch / two-GEMM time (target <= 1.3).
With CUDA it also checks the CuPy kernels against their NumPy twins.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def synth_chunks(n: int, d_in: int, d_out: int, noise: float, seed: int,
                 chunk: int = 65536):
    """Yield ``(A, Y)`` chunks: sources with a decaying spectrum and a positive mean;
    Y = A W^T + b + noise."""
    rng = np.random.default_rng(seed)
    spec = (3.0 * np.arange(1, d_in + 1) ** -0.5).astype(np.float32)
    Q = np.linalg.qr(rng.standard_normal((d_in, d_in)))[0].astype(np.float32) * spec[:, None]
    Wt = (rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(np.float32)
    b = (1.0 + 0.2 * rng.standard_normal(d_out)).astype(np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        A = rng.standard_normal((e - s, d_in), dtype=np.float32) @ Q
        A += 0.5
        Y = A @ Wt
        Y += b
        Y += noise * rng.standard_normal((e - s, d_out), dtype=np.float32)
        yield A, Y


def synth(n: int, d_in: int, d_out: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    """The whole of :func:`synth_chunks` in memory."""
    parts = list(synth_chunks(n, d_in, d_out, noise, seed))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_stores(folder: Path, n: int, d_in: int, d_out: int, noise: float,
                 seed: int) -> tuple[Path, Path]:
    """Two complete feature stores (source, target) in the extractor's layout, 64 MB shards."""
    from xnetmap.extract import store as st
    from xnetmap.fsutil import file_sha256

    paths = (folder / "source", folder / "target")
    dims = (d_in, d_out)
    rows = [max(1, (64 << 20) // (4 * d)) for d in dims]
    shards: list[list[dict]] = [[], []]
    pending: list[list[np.ndarray]] = [[], []]
    done = [0, 0]
    for p in paths:
        p.mkdir(parents=True)

    def flush(side: int, final: bool) -> None:
        while pending[side] and (final or sum(len(a) for a in pending[side]) >= rows[side]):
            blk = np.concatenate(pending[side])
            head, rest = blk[: rows[side]], blk[rows[side]:]
            pending[side] = [rest] if len(rest) else []
            k = len(shards[side])
            name = st.shard_name(k)
            np.save(paths[side] / name, head)
            shards[side].append({"index": k, "file": name, "start": done[side],
                                 "stop": done[side] + len(head),
                                 "sha256": file_sha256(paths[side] / name)})
            done[side] += len(head)

    for A, Y in synth_chunks(n, d_in, d_out, noise, seed):
        for side, M in enumerate((A, Y)):
            pending[side].append(M)
            flush(side, False)
    for side in (0, 1):
        flush(side, True)
        st.atomic_save_npy(paths[side] / st.MASK, np.zeros(n, bool))
        (paths[side] / st.IDS).write_text(json.dumps([f"s{i}" for i in range(n)]))
        manifest = {"format": st.FORMAT, "format_version": st.FORMAT_VERSION, "n": n,
                    "dim": dims[side], "dtype": "float32", "model_sha256": f"bench-{side}",
                    "labeled": False, "shards": shards[side], "shard_rows": rows[side],
                    "complete": True}
        (paths[side] / st.MANIFEST).write_text(json.dumps(manifest))
    return paths


class MemorySampler:
    """Peak RSS (VmHWM) and the peak of its anonymous part (RssAnon, sampled every 20 ms)."""

    def __enter__(self) -> MemorySampler:
        self.base = _status("RssAnon")
        self.peak_anon = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_anon = max(self.peak_anon, _status("RssAnon"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_anon = max(self.peak_anon, _status("RssAnon"))
        self.peak_rss = _status("VmHWM")


def _status(key: str) -> int:
    """A field of /proc/self/status in bytes (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def time_two_gemms(xp, A, n_train: int, d_out: int, batch: int, repeats: int = 2) -> float:
    """Seconds for one epoch's forward and gradient GEMMs (best of ``repeats``)."""
    d_in = A.shape[1]
    W = xp.asarray(np.random.default_rng(1).standard_normal((d_out, d_in)).astype(np.float32))
    P = xp.empty((batch, d_out), np.float32)
    G = xp.empty((d_out, d_in), np.float32)
    Ad = xp.asarray(A[: min(len(A), 4 * batch)]) if xp is not np else A
    best = np.inf
    for _ in range(repeats):
        _sync(xp)
        t = time.perf_counter()
        for s in range(0, n_train, batch):
            n = min(batch, n_train - s)
            off = s % max(1, len(Ad) - batch + 1)
            blk = Ad[off : off + n]
            xp.matmul(blk, W.T, out=P[:n])
            xp.matmul(P[:n].T, blk, out=G)
        _sync(xp)
        best = min(best, time.perf_counter() - t)
    return best


def _sync(xp) -> None:
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def compare_kernels(xp, A, Y, batch: int) -> str:
    """Max differences between the CuPy kernels and their NumPy twins on one batch."""
    from xnetmap.backend import CupyDevice
    from xnetmap.fit.kernels import LossGradWork, cuda_loss_grad, numpy_loss_grad
    from xnetmap.fit.optim import cuda_nesterov, nesterov_step_numpy

    dev = CupyDevice(xp)

    rng = np.random.default_rng(2)
    W = (rng.standard_normal((Y.shape[1], A.shape[1])) * 0.05).astype(np.float32)
    P = A[:batch] @ W.T
    T = Y[:batch]
    Pd = xp.asarray(P)
    loss_d, ysq_d = xp.empty(batch, np.float32), xp.empty(batch, np.float32)
    cuda_loss_grad(dev)(Pd, xp.asarray(T), loss_d, ysq_d, 1.0 / batch)
    loss, _ = numpy_loss_grad(P, T, LossGradWork(batch, Y.shape[1]), scale=1.0 / batch)
    dg = float(np.max(np.abs(xp.asnumpy(Pd) - P)) / (np.max(np.abs(P)) + 1e-30))
    dl = float(np.max(np.abs(xp.asnumpy(loss_d) - loss)))
    p, v, g = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(3))
    pd, vd = xp.asarray(p), xp.asarray(v)
    cuda_nesterov(dev)(xp.asarray(g), xp.asarray(np.array([0.3], np.float32)), np.float32(0.5),
                      pd, vd)
    nesterov_step_numpy(p, v, g, 0.3, 0.5, np.empty_like(p))
    do = float(np.max(np.abs(xp.asnumpy(pd) - p)))
    return f"kernel vs twin: grad rel {dg:.2e}, loss abs {dl:.2e}, nesterov abs {do:.2e}"


SIZES = ((800_000, 512, 768), (200_000, 1536, 2048))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="rows (with --d-in/--d-out: one size)")
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-out", type=int, default=768)
    ap.add_argument("--paper", action="store_true", help="1,280,000 x 1,536 -> 2,048 (~18 GB)")
    ap.add_argument("--in-memory", action="store_true", help="arrays in memory, not stores")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: the fit's auto")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--init", default="lstsq", choices=["zero", "lstsq"],
                    help="gd start (default: the fit's default, lstsq)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lstsq", action="store_true",
                    help="also fit the closed form alone (reference held-out loss)")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="cProfile the gd fit and print its top K entries (cumulative)")
    ap.add_argument("--tmp", default=None, help="folder for the stores (default: system temp)")
    args = ap.parse_args(argv)
    sizes = [(args.n, args.d_in, args.d_out)] if args.n else list(SIZES)
    if args.paper:
        sizes = [(1_280_000, 1536, 2048)]

    from xnetmap.backend import array_module
    from xnetmap.runtime import resolve_device

    device = resolve_device(args.device)
    xp = array_module(device)
    ratios = []
    for n, d_in, d_out in sizes:
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="xnetmap-bench-fit-") as tmp:
            ratios.append(run_size(args, n, d_in, d_out, device, xp, Path(tmp)))
    for (n, d_in, d_out), r in zip(sizes, ratios, strict=True):
        print(f"  {n:,} x {d_in} -> {d_out}: epoch / two-GEMM time {r:.3f}")
    where = "arrays in memory" if args.in_memory else "stores on disk"
    print(f"ratio epoch / two-GEMM time (best of each, worst size, {where}): {max(ratios):.3f} "
          "(target <= 1.3)")
    return 0


def run_size(args, n: int, d_in: int, d_out: int, device: str, xp, tmp: Path) -> float:
    """Fit one size; print its lines; return the epoch / two-GEMM ratio."""
    from xnetmap.fit import AffineMap

    t = time.perf_counter()
    if args.in_memory:
        X, Y = synth(n, d_in, d_out, args.noise, args.seed)
    else:
        X, Y = write_stores(tmp, n, d_in, d_out, args.noise, args.seed)
    where = "in memory" if args.in_memory else f"as feature stores in {tmp}"
    print(f"synthetic {n:,} x {d_in} -> {d_out} (noise {args.noise}) made {where} in "
          f"{time.perf_counter() - t:.1f} s; device {device}", flush=True)

    def fit(amap, progress=None):
        if args.in_memory:
            return amap.fit(X, Y, progress=progress)
        return amap.fit_stores(X, Y, progress=progress)

    ref = None
    if args.lstsq:
        ls = fit(AffineMap(solver="lstsq", calibrate="none", seed=args.seed))
        ref = ls.metrics_["loss"]
        print(f"lstsq: solve {ls.info_['solve_seconds']:.2f} s, held-out loss {ref:.6f}, "
              f"cosine {ls.metrics_['cosine']:.5f}", flush=True)

    n_train = n - int(round(0.1 * n))  # the fit's default 10% hold-out
    batch = args.batch_size or int(np.clip(n_train // 16, 256, 8192))  # the fit's auto batch
    A_mem = next(synth_chunks(min(n, 4 * batch), d_in, d_out, 0.0, args.seed + 1,
                              chunk=4 * batch))[0]
    gemm_times: list[float] = []

    def progress(rec: dict) -> None:
        rel = f" ({100 * (rec['holdout_loss'] / ref - 1):+.2f}% vs lstsq)" if ref else ""
        print(f"  gd epoch {rec['epoch']}: train pass {rec['epoch_seconds']:.2f} s, with eval "
              f"{rec['seconds']:.2f} s, held-out loss {rec['holdout_loss']:.6f}{rel}", flush=True)
        # the CPU is shared: time the two GEMMs between epochs, under the same load
        gemm_times.append(time_two_gemms(xp, A_mem, n_train, d_out, batch, 1))

    gd = AffineMap(solver="gd", device=device, epochs=args.epochs, batch_size=args.batch_size,
                   seed=args.seed, init=args.init, calibrate="none", patience=args.epochs)
    gd.profile_gemms = True  # also time the GEMMs inside the loop (CPU)
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    with MemorySampler() as mem:
        fit(gd, progress)
    if prof is not None:
        prof.disable()
        import pstats

        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(args.profile)
    epochs = [r["epoch_seconds"] for r in gd.history_]
    t_epoch, t_gemm = min(epochs), min(gemm_times)
    print(f"gd ({device}, init {args.init}, batch {batch}): fit {gd.info_['fit_seconds']:.1f} s "
          f"(init {gd.info_['init_seconds']:.2f} s), epoch train pass: best {t_epoch:.3f} s, "
          f"median {statistics.median(epochs):.3f} s of {len(epochs)}; held-out loss "
          f"{gd.metrics_['loss']:.6f}")
    print(f"two GEMMs of one epoch ({n_train:,} rows, timed between epochs): best "
          f"{t_gemm:.3f} s, median {statistics.median(gemm_times):.3f} s")
    inloop = [r["gemm_seconds"] / r["epoch_seconds"] for r in gd.history_ if "gemm_seconds" in r]
    if inloop:
        print(f"inside the loop the two GEMMs take {100 * statistics.median(inloop):.1f}% of the "
              f"epoch (median)")
    print(f"memory during the gd fit: peak RSS {mem.peak_rss / 2**20:.0f} MiB (process), peak "
          f"anonymous {mem.peak_anon / 2**20:.0f} MiB ({(mem.peak_anon - mem.base) / 2**20:.0f} "
          "MiB above the level before the fit)")
    if device == "cuda" and args.in_memory:
        print(compare_kernels(xp, X, Y, min(batch, n)))
    ratio = t_epoch / t_gemm
    print(f"{n:,} x {d_in} -> {d_out}: ratio epoch / two-GEMM time {ratio:.3f}", flush=True)
    return ratio


if __name__ == "__main__":
    sys.exit(main())
