#!/usr/bin/env python
"""Benchmark: extraction images/s with ``--engine ray`` against ``--engine local``.

Same machine, same data, same model, same CPUs: a Ray cluster of ``--cpus`` CPUs
(started here, before timing, like a standing cluster) against the local engine
on the same number of cores (run this under ``taskset`` to pin a bigger machine
to ``--cpus`` cores). Data: the first ``--n`` images of the bundled Fashion-MNIST
training set (IDX, at least 10,000); model: a zoo model from ``models/``, split
once beforehand so both engines run the same F. Each engine writes a fresh store
per round; rounds alternate (local, ray, local, ray, ...) because the machine may
be shared, and the best round of each is kept. Two sizes (N/2 and N) give each
engine's marginal throughput and fixed cost (t = fixed + n / rate; Ray's fixed
cost is starting its actors: worker processes that import xnetmap, onnxruntime
and Ray Data, and open a session). Prints, last, the end-to-end ratio ray / local
at N images (goal >= 0.8: on one machine Ray can only add overhead).

The cluster is set up as the README recommends for a standing one: its worker
processes import Ray Data, onnxruntime and xnetmap's actor module as they boot
(``RAY_preload_python_modules``; ``--no-preload`` shows a cluster without it).
Each timed run starts after ``--settle`` seconds, whatever its engine, so that
the cluster's background work (Ray replaces the worker processes of the last
run's actors) is not charged to whichever engine runs next. Two more figures,
not in the ratio: two extractions back to back in one process (what
``run-study`` does for train and val), and, at N = 20,000, a fresh
``xnetmap extract`` command per engine (wall clock, Python start-up and joining
the cluster included).

Usage: ``python tools/bench_ray.py [--n 20000] [--model models/resnet_v2.onnx]
[--cpus 2] [--batch-size 128] [--rounds 2] [--settle 3] [--no-preload]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "resnet_v2.onnx")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds of quiet before every timed run (both engines)")
    ap.add_argument("--no-preload", action="store_true",
                    help="workers import Ray Data and xnetmap only when an actor starts")
    args = ap.parse_args(argv)
    if not 10000 <= args.n <= 20000:
        ap.error("--n must be between 10,000 and 20,000 (the bundled training set)")

    import ray

    from xnetmap.data import open_dataset
    from xnetmap.extract import extract_features
    from xnetmap.extract.ray_engine import PRELOAD
    from xnetmap.graph import split_model

    ds = open_dataset(ROOT / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    ds = ds.subset(np.arange(args.n))
    work = Path(tempfile.mkdtemp(prefix="xnetmap-bench-ray-"))
    split = split_model(args.model, work / "split")
    t = time.perf_counter()
    if not args.no_preload:
        os.environ["RAY_preload_python_modules"] = ",".join(PRELOAD)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    os.environ.pop("RAY_preload_python_modules", None)
    print(f"ray {ray.__version__}: local cluster of {args.cpus} CPUs started in "
          f"{time.perf_counter() - t:.1f} s (not counted below); workers preload: "
          f"{'nothing' if args.no_preload else ', '.join(PRELOAD)}; {args.settle:g} s "
          "settle before each timed run")
    print(f"model {args.model.name} (D = {split.feature_dim}), {args.n:,} Fashion-MNIST "
          f"images, batch {args.batch_size}")
    sizes = (args.n // 2, args.n)
    best: dict = {}  # (engine, n) -> best seconds
    for r in range(args.rounds):
        for n in sizes:
            sub = ds.subset(np.arange(n))
            for engine in ("local", "ray"):
                time.sleep(args.settle)
                t = time.perf_counter()
                store = extract_features(args.model, sub, work / engine, split=split,
                                         batch_size=args.batch_size, overwrite=True,
                                         engine=engine,
                                         threads=args.cpus if engine == "local" else None)
                secs = time.perf_counter() - t
                assert store.run["computed_rows"] == n
                best[engine, n] = min(best.get((engine, n), secs), secs)
                print(f"round {r + 1} {engine:5s} {n:6,d} images: {secs:6.1f} s "
                      f"{n / secs:7,.0f} img/s (engine {store.run['engine']})")
    # t(n) = fixed + n / rate, from the best times at two sizes
    for engine in ("local", "ray"):
        t1, t2 = best[engine, sizes[0]], best[engine, sizes[1]]
        if t2 <= t1:  # noise larger than the work added: no slope to read
            print(f"{engine:5s}: marginal rate not measurable (the larger run was not slower)")
            continue
        rate = (sizes[1] - sizes[0]) / (t2 - t1)
        print(f"{engine:5s}: marginal {rate:7,.0f} img/s, fixed cost "
              f"{t2 - sizes[1] / rate:5.1f} s (start-up: session / actors)")
    rates = {e: args.n / best[e, args.n] for e in ("local", "ray")}
    same = all(np.array_equal(a, b) for a, b in zip(
        extract_features(args.model, ds, work / "local", split=split,
                         batch_size=args.batch_size).shard_arrays(),
        extract_features(args.model, ds, work / "ray", split=split, engine="ray",
                         batch_size=args.batch_size).shard_arrays()))
    print(f"stores identical: {same}")
    _back_to_back(args, ds, split, work, extract_features)
    if args.n == 20000:  # the whole bundled file: a dataset the command line can name
        _fresh_commands(args, split, work, ray.get_runtime_context().gcs_address)
    print(f"end to end at {args.n:,} images: local {rates['local']:,.0f} img/s, "
          f"ray {rates['ray']:,.0f} img/s")
    print(f"ratio ray/local (end to end): {rates['ray'] / rates['local']:.2f}")


def _back_to_back(args, ds, split, work: Path, extract_features) -> None:
    """Two extractions in one process, as run-study does (val: N/2, then train: N)."""
    val, train = ds.subset(np.arange(args.n // 2)), ds
    line = []
    for engine in ("local", "ray"):
        time.sleep(args.settle)
        t = time.perf_counter()
        for name, sub in (("val", val), ("train", train)):
            extract_features(args.model, sub, work / f"b2b-{engine}-{name}", split=split,
                             batch_size=args.batch_size, overwrite=True, engine=engine,
                             threads=args.cpus if engine == "local" else None)
        secs = time.perf_counter() - t
        line.append(f"{engine} {secs:.1f} s ({(len(val) + len(train)) / secs:,.0f} img/s)")
    print(f"two extractions back to back ({len(val):,} + {len(train):,} images, one "
          f"process): {', '.join(line)}")


def _fresh_commands(args, split, work: Path, address: str) -> None:
    """`xnetmap extract` as a new process per engine: wall clock, start-up included."""
    data = f"idx:{ROOT / 'data' / 'fashion-mnist' / 'train-images-idx3-ubyte.gz'}"
    line = []
    for engine in ("local", "ray"):
        cmd = [sys.executable, "-m", "xnetmap", "extract", str(split.features_path), data,
               "-o", str(work / f"cli-{engine}"), "--batch-size", str(args.batch_size),
               "--overwrite", "-q", "--engine", engine]
        cmd += ["--threads", str(args.cpus)] if engine == "local" else ["--ray-address",
                                                                        address]
        time.sleep(args.settle)
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        secs = time.perf_counter() - t
        line.append(f"{engine} {secs:.1f} s ({args.n / secs:,.0f} img/s)")
    print(f"a fresh `xnetmap extract` command per engine ({args.n:,} images, wall clock "
          f"with Python start-up): {', '.join(line)}")


if __name__ == "__main__":
    main()
