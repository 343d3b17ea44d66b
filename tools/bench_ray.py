#!/usr/bin/env python
"""Benchmark: extraction images/s with ``--engine ray`` against ``--engine local``.

Same machine, same data, same model, same CPUs: a Ray cluster of ``--cpus`` CPUs
(started here, before timing, like a standing cluster) against the local engine
on the same number of cores (run this under ``taskset`` to pin a bigger machine
to ``--cpus`` cores). Data: the first ``--n`` images of the bundled Fashion-MNIST
training set (IDX, at least 10,000); model: a zoo model from ``models/``, split
once beforehand so both engines run the same F. Each engine writes a fresh store
per round; rounds alternate (local, ray, local, ray, ...) because the machine may
be shared, and the best round of each is reported, end to end and after the
first result (Ray's fixed cost is starting its actors: worker processes that
import xnetmap, onnxruntime and Ray Data, and open a session). Prints, last, the
end-to-end ratio ray / local (goal >= 0.8: on one machine Ray can only add overhead).

Usage: ``python tools/bench_ray.py [--n 20000] [--model models/resnet_v2.onnx]
[--cpus 2] [--batch-size 128] [--rounds 2]``
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args(argv)
    if not 10000 <= args.n <= 20000:
        ap.error("--n must be between 10,000 and 20,000 (the bundled training set)")

    import ray

    from xnetmap.data import open_dataset
    from xnetmap.extract import extract_features
    from xnetmap.graph import split_model

    ds = open_dataset(ROOT / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    ds = ds.subset(np.arange(args.n))
    work = Path(tempfile.mkdtemp(prefix="xnetmap-bench-ray-"))
    split = split_model(args.model, work / "split")
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"ray {ray.__version__}: local cluster of {args.cpus} CPUs started in "
          f"{time.perf_counter() - t:.1f} s (not counted below)")
    print(f"model {args.model.name} (D = {split.feature_dim}), {args.n:,} Fashion-MNIST "
          f"images, batch {args.batch_size}")
    best = {"local": 0.0, "ray": 0.0}
    steady = {"local": 0.0, "ray": 0.0}
    for r in range(args.rounds):
        for engine in ("local", "ray"):
            marks: list = []

            def mark(done, _total, marks=marks):
                marks.append((time.perf_counter(), done))

            t = time.perf_counter()
            store = extract_features(args.model, ds, work / engine, split=split,
                                     batch_size=args.batch_size, overwrite=True, engine=engine,
                                     threads=args.cpus if engine == "local" else None,
                                     progress=mark)
            end = time.perf_counter()
            secs = end - t
            assert store.run["computed_rows"] == args.n
            rate = args.n / secs
            first_t, first_d = next(m for m in marks if m[1] > 0)
            flow = (args.n - first_d) / max(end - first_t, 1e-9)  # after the first result
            best[engine] = max(best[engine], rate)
            steady[engine] = max(steady[engine], flow)
            print(f"round {r + 1} {engine:5s}: {secs:6.1f} s  {rate:8,.0f} img/s end to end; "
                  f"first result after {first_t - t:4.1f} s, then {flow:8,.0f} img/s "
                  f"(engine {store.run['engine']})")
    same = all(np.array_equal(a, b) for a, b in zip(
        extract_features(args.model, ds, work / "local", split=split,
                         batch_size=args.batch_size).shard_arrays(),
        extract_features(args.model, ds, work / "ray", split=split,
                         batch_size=args.batch_size).shard_arrays()))
    print(f"stores identical: {same}")
    print(f"after the first result: local {steady['local']:,.0f} img/s, ray "
          f"{steady['ray']:,.0f} img/s, ratio {steady['ray'] / steady['local']:.2f}")
    print(f"best local {best['local']:,.0f} img/s, best ray {best['ray']:,.0f} img/s")
    print(f"ratio ray/local (end to end): {best['ray'] / best['local']:.2f}")


if __name__ == "__main__":
    main()
