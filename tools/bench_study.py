"""Benchmark the demo study, cold, against its lower bound measured in the same run.

    nice -n 10 python tools/bench_study.py            # default settings (solver gd)
    python tools/bench_study.py --solver lstsq        # the study with closed-form maps
    python tools/bench_study.py --init zero           # gd from zero (the old default)

1. The demo, cold: ``run_study`` on the bundled zoo (five models) with the
   20,000 bundled training images and the 10,000 test images, in a fresh cache
   folder (split, extract, classifiers, 20 maps, Table 1). Timed from the call
   to its return; the per-phase split comes from the progress messages.
2. The lower bound: a bare onnxruntime loop (the xnetmap session options, batch
   64, images decoded and scaled beforehand, not timed) over the 20,000 + 10,000
   images for each of the five full models, plus the 20 closed-form solves
   (``solver="lstsq"``, their solve time) on the stores the demo wrote.

The LAST line is ``study/lower_bound`` (target <= 1.25).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 64  # the extractor's default batch


def bare_inference_seconds(models: list[Path], images: list[np.ndarray]) -> float:
    """Seconds of a bare onnxruntime loop over ``images`` for every model (sessions included)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()  # xnetmap's CPU session options (xnetmap/runtime/session.py)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    total = 0.0
    for m in models:
        t = time.perf_counter()
        sess = ort.InferenceSession(str(m), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for x in images:
            for s in range(0, len(x), BATCH):
                sess.run(None, {name: x[s : s + BATCH]})
        dt = time.perf_counter() - t
        print(f"  bare onnxruntime, {m.stem}: {dt:.2f} s", flush=True)
        total += dt
    return total


def closed_form_seconds(cache: Path, n_train: int) -> tuple[float, int]:
    """Sum of the lstsq solve times over every ordered pair of the demo's training stores."""
    from xnetmap.extract import FeatureStore
    from xnetmap.fit import AffineMap

    stores = []
    for man in sorted(cache.rglob("manifest.json")):
        st = FeatureStore.open(man.parent)
        if st.n == n_train:
            stores.append(st)
    total, count = 0.0, 0
    for a in stores:
        for b in stores:
            if a is b:
                continue
            amap = AffineMap(solver="lstsq", calibrate="none").fit_stores(a, b)
            total += amap.info_["solve_seconds"]
            count += 1
    return total, count


def print_table(study) -> None:
    """Table 1 (every row) and each map's held-out fit cosine, one line per row."""
    from xnetmap.study.table import table1_rows

    cos = {study.mapping(p.source, p.target): p.fit_cosine for p in study.pairs}
    for r in table1_rows(study):
        c = cos.get(r.mapping)
        fit = f"  fit cosine {c:.5f}" if c is not None else ""
        print("  " + " | ".join(r.cells()) + fit)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--solver", default="gd")
    ap.add_argument("--init", default=None, choices=["zero", "lstsq"],
                    help="gd start (default: AffineMap's default)")
    ap.add_argument("--tmp", default=None, help="folder for the fresh cache")
    args = ap.parse_args(argv)

    from xnetmap.data.idx import read_idx
    from xnetmap.study.demo import bundled_data, bundled_models, display_name
    from xnetmap.study.run import run_study
    from xnetmap.study.settings import StudySettings

    models = bundled_models()
    names = [display_name(m) for m in models]
    train, val = bundled_data()
    fit = {"init": args.init} if args.init else {}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="xnetmap-bench-study-") as tmp:
        cache = Path(tmp) / "cache"
        marks: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        outcome = run_study(models, val=str(val), train=str(train), names=names,
                            settings=StudySettings(solver=args.solver, fit=fit),
                            cache_dir=cache,
                            progress=lambda msg: marks.append((time.perf_counter(), msg)))
        t_demo = time.perf_counter() - t0
        fits = [t for t, msg in marks if "fit map" in msg]
        t_pairs = t0 + t_demo - fits[0] if fits else 0.0
        print(f"demo, cold ({len(models)} models, solver {args.solver}, init "
              f"{args.init or 'default'}): {t_demo:.1f} s; from the first map fit to the end "
              f"{t_pairs:.1f} s ({len(fits)} maps)", flush=True)
        print_table(outcome.study)
        print(f"  seconds by phase (run_study): {outcome.seconds}", flush=True)
        imgs = []
        for path in (train, val):
            x = np.asarray(read_idx(path, mmap=False), np.float32) / 255.0
            imgs.append(np.ascontiguousarray(x.reshape(len(x), 1, 28, 28)))
        t_inf = bare_inference_seconds(models, imgs)
        t_cf, n_cf = closed_form_seconds(cache, len(imgs[0]))
    bound = t_inf + t_cf
    print(f"lower bound: bare onnxruntime {t_inf:.1f} s ({len(models)} models x "
          f"{sum(len(x) for x in imgs):,} images) + {n_cf} closed-form solves {t_cf:.2f} s "
          f"= {bound:.1f} s")
    print(f"study/lower_bound: {t_demo / bound:.3f} (demo {t_demo:.1f} s / {bound:.1f} s; "
          "target <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
