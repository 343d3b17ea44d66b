"""Everything only a GPU can show, in one command: ``python tools/gpu_check.py``.

Checks (each one isolated: an exception fails that check, never the script):

* ``kernels``: the CuPy kernels (loss/gradient, row cosine, Nesterov) against their
  NumPy twins over n in {1, 3, 1000}, d in {1, 7, 255, 256, 257, 2048}, with zero
  rows and rows with 0 < ||p|| <= eps planted, and the gradient written over the
  prediction buffer as the fit does;
* ``fit-planted`` / ``fit-zoo``: ``AffineMap(device="cuda")`` against the CPU fit on
  a planted map (max |dW|) and on real zoo features (stitched Correct within 0.05
  points of the CPU map's);
* ``extract-zoo`` / ``extract-resnet50``: the CUDA execution provider with I/O binding
  against the CPU provider (max |diff| of features/logits, top-1 agreement), and
  ``session.get_providers()`` showing CUDA really ran;
* ``throughput-fp32`` / ``-fp16``: xnetmap's batch runner against a bare onnxruntime
  I/O-binding loop on a ResNet-50 (224x224, batch 256) in the same run: the ratio;
* ``fit-time-200k`` / ``fit-time-paper``: the GD fit of 200,000 x 512 -> 768 and of
  1,280,000 x 1,536 -> 2,048 (10 epochs; goal under 30 s) against the time of the
  GEMMs it needs, measured with ``cupy.matmul`` in the same run.

Prints one table and, as its last line, ``gpu_check: N passed, M failed``.
Exit status: 0 when something ran and nothing failed, 1 when a check failed, 2
when every check was skipped (no GPU, no CuPy or no CUDA execution provider).
The ResNet-50 is built here with onnx.helper (random weights: no download).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


class Skip(Exception):
    """The check cannot run here (the reason is shown in the table)."""


def _cupy():
    from xnetmap.backend import compute_device, has_cupy_gpu

    if not has_cupy_gpu():
        raise Skip("CuPy sees no CUDA GPU")
    return compute_device("cuda")


def _ort_cuda():
    import onnxruntime as ort

    try:
        from xnetmap.backend import has_ort_cuda
    except ImportError:  # device probing moved: the provider list, then the session, tell
        has_ort_cuda = None
    if has_ort_cuda is not None and not has_ort_cuda():
        raise Skip("no CUDA GPU for onnxruntime's CUDA provider (or no CuPy to see one)")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"onnxruntime {ort.__version__} has no CUDA provider "
                   f"({', '.join(ort.get_available_providers())})")
    return ort


# ---------------------------------------------------------------- kernels


def check_kernels(args) -> tuple[bool, str]:
    from xnetmap.fit.kernels import (
        LossGradWork,
        cuda_loss_grad,
        cuda_row_cosine,
        numpy_loss_grad,
        numpy_row_cosine,
    )
    from xnetmap.fit.optim import cuda_nesterov, nesterov_step_numpy

    dev = _cupy()
    cp = dev.xp
    lg, rc, nest = cuda_loss_grad(dev), cuda_row_cosine(dev), cuda_nesterov(dev)
    worst_g = worst_l = worst_c = 0.0
    ok = True
    for n in (1, 3, 1000):
        for d in (1, 7, 255, 256, 257, 2048):
            rng = np.random.default_rng(n * 10_000 + d)
            P = rng.standard_normal((n, d)).astype(np.float32)
            T = rng.standard_normal((n, d)).astype(np.float32)
            if n >= 3:
                T[0], P[1] = 0.0, 0.0
                P[2] *= np.float32(1e-14) / np.linalg.norm(P[2])
            Pd, Td = cp.asarray(P), cp.asarray(T)
            loss_d, psq_d = cp.empty(n, np.float32), cp.empty(n, np.float32)
            lg(Pd, Td, loss_d, psq_d, 1.0 / n)
            G = P.copy()
            loss, _ = numpy_loss_grad(G, T, LossGradWork(n, d), scale=1.0 / n)
            pn = np.maximum(np.linalg.norm(P.astype(np.float64), axis=1, keepdims=True), 1e-12)
            err_g = float(np.max(np.abs(cp.asnumpy(Pd) - G) * pn * n / 2.0))
            err_l = float(np.max(np.abs(cp.asnumpy(loss_d) - loss)))
            c_d = cp.asnumpy(rc(cp.asarray(P), Td, cp.empty(n, np.float64)))
            err_c = float(np.max(np.abs(c_d - numpy_row_cosine(P, T, np.empty(n)))))
            worst_g, worst_l, worst_c = max(worst_g, err_g), max(worst_l, err_l), \
                max(worst_c, err_c)
            ok &= err_g <= 1e-4 and err_l <= 2e-5 and err_c <= 1e-12
            if n >= 3:
                ok &= bool(np.all(cp.asnumpy(Pd)[1:3] == 0))
    rng = np.random.default_rng(0)
    p, v, g = (rng.standard_normal((2048, 255)).astype(np.float32) for _ in range(3))
    pd, vd = cp.asarray(p), cp.asarray(v)
    lr = np.array([0.05], np.float32)
    nest(cp.asarray(g), cp.asarray(lr), np.float32(0.5), pd, vd)
    nesterov_step_numpy(p, v, g, lr, np.float32(0.5), np.empty_like(p))
    err_n = float(np.max(np.abs(cp.asnumpy(pd) - p)))
    ok &= err_n <= 1e-6
    return ok, (f"grad {worst_g:.1e} (rel. to 2/||p||), loss {worst_l:.1e}, cosine "
                f"{worst_c:.1e}, nesterov {err_n:.1e}")


# ---------------------------------------------------------------- fitting


def _planted(n, d_in, d_out, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_in), dtype=np.float32)
    W = (rng.standard_normal((d_out, d_in), dtype=np.float32) / np.sqrt(d_in))
    Y = X @ W.T
    Y += np.float32(noise) * rng.standard_normal(Y.shape, dtype=np.float32)
    return X, Y


def check_fit_planted(args) -> tuple[bool, str]:
    from xnetmap.fit import AffineMap

    _cupy()
    X, Y = _planted(20_000, 256, 192)
    kw = dict(solver="gd", epochs=8, seed=0, calibrate="none")
    cpu = AffineMap(device="cpu", **kw).fit(X, Y)
    gpu = AffineMap(device="cuda", **kw).fit(X, Y)
    dW = float(np.max(np.abs(gpu.W_ - cpu.W_)))
    rel = abs(gpu.metrics_["loss"] / cpu.metrics_["loss"] - 1.0)
    ok = dW <= 0.02 * float(np.max(np.abs(cpu.W_))) and rel <= 0.01
    return ok, (f"max|dW| {dW:.2e} (max|W| {np.max(np.abs(cpu.W_)):.2f}); held-out loss "
                f"cpu {cpu.metrics_['loss']:.5f} gpu {gpu.metrics_['loss']:.5f}")


def _zoo_features(tmp: Path, name: str, images: np.ndarray):
    import onnxruntime as ort

    from xnetmap import split_model

    res = split_model(ROOT / "models" / f"{name}.onnx", tmp / name, verify=False)
    f = ort.InferenceSession(str(res.features_path), providers=["CPUExecutionProvider"])
    inp = f.get_inputs()[0].name
    feats = np.concatenate([f.run(None, {inp: images[i : i + 1000]})[0]
                            for i in range(0, len(images), 1000)])
    return res, feats.reshape(len(images), -1).astype(np.float32)


def _zoo_images(split: str, n: int):
    import gzip

    prefix = "t10k" if split == "test" else "train"
    data = ROOT / "data" / "fashion-mnist"

    def idx(path):
        raw = gzip.decompress(path.read_bytes())
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)

    x = idx(data / f"{prefix}-images-idx3-ubyte.gz")[:n].astype(np.float32)[:, None] / 255.0
    y = idx(data / f"{prefix}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return ((x - np.float32(0.2860)) / np.float32(0.3530)).astype(np.float32), y


def check_fit_zoo(args) -> tuple[bool, str]:
    import onnxruntime as ort

    from xnetmap.fit import AffineMap

    _cupy()
    tr, _ = _zoo_images("train", 20_000)
    va, labels = _zoo_images("test", 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        src, Ftr_a = _zoo_features(Path(tmp), "inception", tr)
        dst, Ftr_b = _zoo_features(Path(tmp), "resnet_v2", tr)
        _, Fva_a = _zoo_features(Path(tmp), "inception", va)
        head = ort.InferenceSession(str(dst.classifier_path), providers=["CPUExecutionProvider"])
        hin = head.get_inputs()[0].name
        correct = {}
        for device in ("cpu", "cuda"):
            m = AffineMap(solver="gd", device=device, seed=0).fit(Ftr_a, Ftr_b)
            logits = head.run(None, {hin: m.transform(Fva_a).astype(np.float32)})[0]
            correct[device] = int(np.sum(logits.argmax(1) == labels))
    diff = abs(correct["cuda"] - correct["cpu"]) / len(labels) * 100
    return diff <= 0.05, (f"I->R stitched Correct cpu {correct['cpu']:,} gpu "
                          f"{correct['cuda']:,} of {len(labels):,} ({diff:.2f} points apart)")


# ---------------------------------------------------------------- extraction


def resnet50(path: Path, dtype=np.float32, seed: int = 0) -> Path:
    """A ResNet-50 (torchvision layout, BN folded) with He-initialised random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    nodes, inits = [], []
    count = [0]

    def name(p):
        count[0] += 1
        return f"{p}{count[0]}"

    def conv(x, cin, cout, k, stride=1, relu=True):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
        wn, bn, y = name("w"), name("b"), name("t")
        inits.extend([numpy_helper.from_array(w.astype(dtype), wn),
                      numpy_helper.from_array(np.zeros(cout, dtype), bn)])
        nodes.append(helper.make_node("Conv", [x, wn, bn], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return y
        r = name("r")
        nodes.append(helper.make_node("Relu", [y], [r]))
        return r

    x = conv("image", 3, 64, 7, 2)
    p = name("p")
    nodes.append(helper.make_node("MaxPool", [x], [p], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1]))
    x, cin = p, 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            h = conv(x, cin, width, 1)
            h = conv(h, width, width, 3, s)
            h = conv(h, width, 4 * width, 1, relu=False)
            sc = conv(x, cin, 4 * width, 1, s, relu=False) if i == 0 else x
            a, r = name("a"), name("r")
            nodes += [helper.make_node("Add", [h, sc], [a]), helper.make_node("Relu", [a], [r])]
            x, cin = r, 4 * width
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["pooled"], axis=1))
    w = rng.standard_normal((2048, 1000)) * np.sqrt(1.0 / 2048)
    inits += [numpy_helper.from_array(w.astype(dtype), "fc_w"),
              numpy_helper.from_array(np.zeros(1000, dtype), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"]))
    graph = helper.make_graph(nodes, "resnet50", [helper.make_tensor_value_info(
        "image", elem, ["N", 3, 224, 224])], [helper.make_tensor_value_info(
            "logits", elem, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _session_api():
    """xnetmap's session factory and batch runner (today in extract.session)."""
    for mod in ("xnetmap.runtime", "xnetmap.extract.session"):
        try:
            m = __import__(mod, fromlist=["make_session", "Runner"])
            return m.make_session, m.Runner
        except (ImportError, AttributeError):
            continue
    raise RuntimeError("xnetmap's make_session/Runner not found: update tools/gpu_check.py")


def _compare_devices(model: Path, x: np.ndarray) -> tuple[float, float, list]:
    """Max |CPU - CUDA| relative to max |CPU| (TF32 convolutions are allowed), top-1
    agreement, and the CUDA session's providers."""
    make_session, Runner = _session_api()
    cpu = make_session(model, "cpu")
    gpu = make_session(model, "cuda")
    providers = gpu.get_providers()
    out_c = Runner(cpu)(x)[0].astype(np.float64)
    out_g = Runner(gpu)(x)[0].astype(np.float64)
    diff = float(np.max(np.abs(out_c - out_g)) / (np.max(np.abs(out_c)) or 1.0))
    agree = float(np.mean(out_c.reshape(len(x), -1).argmax(1) ==
                          out_g.reshape(len(x), -1).argmax(1)))
    return diff, agree, providers


def check_extract_zoo(args) -> tuple[bool, str]:
    _ort_cuda()
    x, _ = _zoo_images("test", 2000)
    worst, agree_min, ok = 0.0, 1.0, True
    for name in ("resnet_v2", "inception", "vgg", "mobilenet", "mixer"):
        diff, agree, providers = _compare_devices(ROOT / "models" / f"{name}.onnx", x)
        worst, agree_min = max(worst, diff), min(agree_min, agree)
        ok &= providers[0] == "CUDAExecutionProvider" and diff <= 1e-2 and agree >= 0.999
    return ok, (f"5 models, 2,000 images: max |diff| / max |out| {worst:.1e}, top-1 agreement "
                f"{agree_min:.4f}")


def check_extract_resnet50(args) -> tuple[bool, str]:
    _ort_cuda()
    with tempfile.TemporaryDirectory() as tmp:
        model = resnet50(Path(tmp) / "r50.onnx")
        x = np.random.default_rng(1).standard_normal((32, 3, 224, 224), dtype=np.float32)
        diff, agree, providers = _compare_devices(model, x)
    scale = "logits of a random ResNet-50"
    ok = providers[0] == "CUDAExecutionProvider" and diff <= 2e-2 and agree >= 0.95
    return ok, (f"{scale}: max |diff| / max |out| {diff:.1e}, top-1 agreement {agree:.3f}, "
                f"{providers[0]}")


def _throughput(dtype, args) -> tuple[bool, str]:
    ort = _ort_cuda()
    make_session, Runner = _session_api()
    batch, reps = 256, args.reps
    with tempfile.TemporaryDirectory() as tmp:
        model = resnet50(Path(tmp) / "r50.onnx", dtype)
        x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(dtype)
        sess = make_session(model, "cuda")
        run = Runner(sess)
        run(x)  # warm-up (cuDNN algorithm search)
        t = time.perf_counter()
        for _ in range(reps):
            run(x)
        ours = batch * reps / (time.perf_counter() - t)
        bare = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider"])
        binding = bare.io_binding()
        binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output("logits", "cuda", 0)
        bare.run_with_iobinding(binding)
        t = time.perf_counter()
        for _ in range(reps):
            bare.run_with_iobinding(binding)
        binding.synchronize_outputs()
        base = batch * reps / (time.perf_counter() - t)
    ratio = ours / base
    return ratio >= 0.8, (f"xnetmap {ours:,.0f} img/s, bare I/O-binding loop {base:,.0f} img/s "
                          f"(ratio {ratio:.2f}; host input copied in each batch)")


def check_throughput_fp32(args):
    return _throughput(np.float32, args)


def check_throughput_fp16(args):
    return _throughput(np.float16, args)


# ---------------------------------------------------------------- fit time


def _fit_time(n, d_in, d_out, args) -> tuple[bool, str]:
    from xnetmap.fit import AffineMap

    dev = _cupy()
    cp = dev.xp
    rng = cp.random.default_rng(0)
    Xd = rng.standard_normal((n, d_in), dtype=cp.float32)
    Wd = rng.standard_normal((d_out, d_in), dtype=cp.float32) / np.float32(np.sqrt(d_in))
    Yd = Xd @ Wd.T + np.float32(0.1) * rng.standard_normal((n, d_out), dtype=cp.float32)
    X, Y = cp.asnumpy(Xd), cp.asnumpy(Yd)
    del Yd
    batch = 8192
    P, G = cp.empty((batch, d_out), cp.float32), cp.empty((d_out, d_in), cp.float32)
    n_train = n - int(round(0.1 * n))
    cp.cuda.Stream.null.synchronize()
    t = time.perf_counter()
    for _ in range(10):  # the two GEMMs of 10 epochs
        for s in range(0, n_train, batch):
            A = Xd[s : s + batch]
            cp.matmul(A, Wd.T, out=P[: len(A)])
            cp.matmul(P[: len(A)].T, A, out=G)
    cp.cuda.Stream.null.synchronize()
    t_gemm = time.perf_counter() - t
    del Xd
    m = AffineMap(solver="gd", device="cuda", epochs=10, patience=10, calibrate="none",
                  batch_size=batch, seed=0)
    t = time.perf_counter()
    m.fit(X, Y)
    t_fit = time.perf_counter() - t
    t_loop = sum(r["seconds"] for r in m.history_)
    ok = t_fit < 30.0 if n >= 1_000_000 else True
    return ok, (f"fit {t_fit:.1f} s (10 epochs: {t_loop:.1f} s, init {m.info_['init_seconds']:.1f}"
                f" s), GEMMs alone {t_gemm:.2f} s: ratio {t_loop / t_gemm:.2f}; held-out loss "
                f"{m.metrics_['loss']:.5f}")


def check_fit_time_200k(args):
    return _fit_time(200_000, 512, 768, args)


def check_fit_time_paper(args):
    if args.skip_paper:
        raise Skip("--skip-paper")
    return _fit_time(1_280_000, 1536, 2048, args)


CHECKS = [("kernels", check_kernels), ("fit-planted", check_fit_planted),
          ("fit-zoo", check_fit_zoo), ("extract-zoo", check_extract_zoo),
          ("extract-resnet50", check_extract_resnet50),
          ("throughput-fp32", check_throughput_fp32), ("throughput-fp16", check_throughput_fp16),
          ("fit-time-200k", check_fit_time_200k), ("fit-time-paper", check_fit_time_paper)]


def run_checks(args) -> list[tuple[str, str, float, str]]:
    rows = []
    for name, fn in CHECKS:
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        try:
            ok, detail = fn(args)
            status = "PASS" if ok else "FAIL"
        except Skip as e:
            status, detail = "SKIP", str(e)
        except Exception as e:  # one check's crash is that check's failure
            status = "FAIL"
            detail = f"{type(e).__name__}: {e}".splitlines()[0][:160]
            if args.verbose:
                traceback.print_exc()
        rows.append((name, status, time.perf_counter() - t, detail))
        print(f"  {name}: {status} ({detail})", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="run only these checks")
    ap.add_argument("--skip-paper", action="store_true", help="skip the 18 GB paper-scale fit")
    ap.add_argument("--reps", type=int, default=20, help="batches per throughput measurement")
    ap.add_argument("-v", "--verbose", action="store_true", help="tracebacks of failures")
    args = ap.parse_args(argv)
    rows = run_checks(args)
    w = max(len(r[0]) for r in rows) if rows else 5
    print(f"{'check':<{w}}  status  seconds  result")
    for name, status, secs, detail in rows:
        print(f"{name:<{w}}  {status:<6}  {secs:7.1f}  {detail}")
    passed = sum(r[1] == "PASS" for r in rows)
    failed = sum(r[1] == "FAIL" for r in rows)
    print(f"gpu_check: {passed} passed, {failed} failed")
    if failed:
        return 1
    return 0 if passed else 2


if __name__ == "__main__":
    sys.exit(main())
