"""Export the trained Fashion-MNIST zoo to ONNX with xnetmap metadata (tools only; needs torch).

For every checkpoint ``CKPT_DIR/KEY.pt`` written by ``tools/train_zoo.py`` this writes
``models/KEY.onnx`` (opset 17, input ``image`` [N,1,28,28] float32, output ``logits`` [N,10],
dynamic batch dimension ``N``) with metadata_props ``xnetmap.preprocess``, ``xnetmap.labels`` and
``xnetmap.model_card``, runs ``onnx.checker`` (full check), and measures top-1 accuracy through
onnxruntime (CPU) on the 10,000 test images and on the first 2,000 (the slice that
``tests/test_zoo.py`` re-checks), preprocessing exactly as the metadata says:
``(x / 255 - 0.2860) / 0.3530``.

Usage::

    python tools/export_zoo.py --ckpt build/zoo --out models

Prints a markdown table for models/README.md and writes ``CKPT_DIR/export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_zoo import DEBIAN_DIR, MEAN, STD, read_idx  # noqa: E402
from zoo_models import MODELS  # noqa: E402

OPSET = 17
MAX_BYTES = 3 * 1024 * 1024
SLICE = 2000
LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
PREPROCESS = {
    "version": 1,
    "size": [28, 28],
    "resize": None,
    "crop": "none",
    "interpolation": "bilinear",
    "colour": "L",
    "channel_order": "RGB",
    "layout": "NCHW",
    "scale": 1.0 / 255.0,
    "mean": [MEAN],
    "std": [STD],
}
TRAIN_COMMAND = "python tools/train_zoo.py --out build/zoo --models {key}"
EXPORT_COMMAND = "python tools/export_zoo.py --ckpt build/zoo --out models --models {key}"


def test_set(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return test images (10000, 1, 28, 28) float32 preprocessed as PREPROCESS says, labels."""
    x = read_idx(data_dir / "t10k-images-idx3-ubyte.gz").astype(np.float32)
    x = (x * np.float32(PREPROCESS["scale"]) - np.float32(MEAN)) / np.float32(STD)
    y = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return np.ascontiguousarray(x[:, None]), y


def ort_predictions(path: Path, x: np.ndarray, batch: int = 500) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = [sess.run(["logits"], {"image": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out).argmax(1)


def export_one(key: str, ckpt: Path, out_dir: Path, x: np.ndarray, y: np.ndarray) -> dict:
    record = json.loads((ckpt / f"{key}.json").read_text())
    model = MODELS[key]()
    model.load_state_dict(torch.load(ckpt / f"{key}.pt", weights_only=True))
    model.eval()
    dst = out_dir / f"{key}.onnx"
    tmp = out_dir / f"{key}.onnx.tmp"
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        str(tmp),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    proto = onnx.load(str(tmp))

    with torch.no_grad():
        torch_pred = torch.cat(
            [model(torch.from_numpy(x[i : i + 1000])).argmax(1) for i in range(0, len(x), 1000)]
        ).numpy()
    # Accuracy is measured on the exported graph (metadata does not change the maths).
    onnx.save(proto, str(tmp))
    ort_pred = ort_predictions(tmp, x)
    card = {
        "family": record["family"],
        "key": key,
        "params": record["params"],
        "feature_dim": record["feature_dim"],
        "epochs": record["epochs"],
        "train_seconds": record["train_seconds"],
        "cpu_seconds": record.get("cpu_seconds"),
        "threads": record.get("threads"),
        "torch_version": record.get("torch_version"),
        "train_images": 60000,
        "seed": record["seed"],
        "optimizer": record["optimizer"],
        "batch": record["batch"],
        "augmentation": record["augmentation"],
        "torch_test_acc": round(float((torch_pred == y).mean()), 4),
        "ort_test_acc": round(float((ort_pred == y).mean()), 4),
        "ort_slice_acc": round(float((ort_pred[:SLICE] == y[:SLICE]).mean()), 4),
        "slice": f"first {SLICE} images of t10k",
        "ort_torch_agreement": round(float((ort_pred == torch_pred).mean()), 4),
        "train_command": TRAIN_COMMAND.format(key=key),
        "export_command": EXPORT_COMMAND.format(key=key),
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1)",
    }
    del proto.metadata_props[:]
    for k, v in (
        ("xnetmap.preprocess", json.dumps(PREPROCESS)),
        ("xnetmap.labels", json.dumps(LABELS)),
        ("xnetmap.model_card", json.dumps(card)),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "xnetmap tools/export_zoo.py"
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{dst}: {len(data)} bytes > {MAX_BYTES}; shrink the model")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    card["bytes"] = len(data)
    return card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("build/zoo"))
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=DEBIAN_DIR)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    x, y = test_set(args.data)
    cards = {}
    for key in args.models.split(","):
        if not (args.ckpt / f"{key}.pt").exists():
            print(f"skip {key}: no checkpoint in {args.ckpt}", file=sys.stderr)
            continue
        cards[key] = export_one(key, args.ckpt, args.out, x, y)
        c = cards[key]
        print(f"{key}: ort {c['ort_test_acc']:.4f} torch {c['torch_test_acc']:.4f} "
              f"slice {c['ort_slice_acc']:.4f} agree {c['ort_torch_agreement']:.4f} "
              f"{c['bytes']} bytes", flush=True)
    old = {}
    if (args.ckpt / "export.json").exists():
        old = json.loads((args.ckpt / "export.json").read_text())
    old.update(cards)
    (args.ckpt / "export.json").write_text(json.dumps(old, indent=2))
    print("\n| family | file | parameters | feature width | test top-1 (onnxruntime) "
          "| first-2,000 top-1 | training wall / CPU time | epochs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, c in old.items():
        print(f"| {c['family']} | `models/{key}.onnx` | {c['params']:,} | {c['feature_dim']} "
              f"| {100 * c['ort_test_acc']:.2f}% | {100 * c['ort_slice_acc']:.2f}% "
              f"| {c['train_seconds'] / 60:.1f} / {c['cpu_seconds'] / 60:.1f} min "
              f"| {c['epochs']} |")


if __name__ == "__main__":
    main()
