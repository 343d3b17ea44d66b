"""Train the Fashion-MNIST demo zoo on CPU (tools only; needs torch, never imported by xnetmap).

Reads the full 60,000-image training set and the 10,000-image test set from the Debian
package ``dataset-fashion-mnist`` (IDX files, gzipped), trains one model per family one after
another with fixed seeds, and writes for each model ``CKPT_DIR/KEY.pt`` (state_dict) and
``CKPT_DIR/KEY.json`` (epochs, per-epoch time and test accuracy, training wall time).
``tools/export_zoo.py`` turns the checkpoints into the ONNX files in ``models/``.

Reproduce the committed zoo with::

    python tools/train_zoo.py --out build/zoo

Measure one epoch's cost per model (no checkpoints written)::

    python tools/train_zoo.py --bench 20
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

# NOTE: with the default (active) OpenMP wait policy, two torch threads on a shared machine spin
# at every barrier and one training step took 10x longer (measured); passive waiting fixes it
# without changing any result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_models import MODELS  # noqa: E402

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530

# Per-model schedule: epochs, peak learning rate, weight decay (AdamW + OneCycle).
SCHEDULE = {
    "mixer": dict(epochs=8, lr=3e-3, wd=5e-2),
    "mobilenet": dict(epochs=5, lr=5e-3, wd=5e-4),
    "resnet_v2": dict(epochs=4, lr=4e-3, wd=5e-4),
    "inception": dict(epochs=4, lr=4e-3, wd=5e-4),
    "vgg": dict(epochs=4, lr=4e-3, wd=5e-4),
}


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file into an ndarray (uint8 images (n, 28, 28) or labels (n,))."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data_dir: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return images (n, 1, 28, 28) float32 normalised exactly as the ONNX metadata says."""
    x = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.copy())


def augment(x: torch.Tensor, gen: torch.Generator, crop: bool = False) -> torch.Tensor:
    """Horizontal flip, and (``crop=True``) random crop with 2-pixel background padding.

    NOTE: the committed zoo uses flips only, a judgement call (not an ablation): its 4 to 8
    epoch schedules leave little room for crop augmentation to pay off.
    """
    n = x.shape[0]
    if not crop:
        flip = torch.rand(n, generator=gen) < 0.5
        out = x.clone()
        out[flip] = out[flip].flip(3)
        return out
    bg = (0.0 - MEAN) / STD
    padded = nn.functional.pad(x, (2, 2, 2, 2), value=bg)
    dy = torch.randint(0, 5, (n,), generator=gen)
    dx = torch.randint(0, 5, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None, :])[:, None, :, None].expand(n, 1, 28, 32)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(28)[None, :])[:, None, None, :].expand(n, 1, 28, 28)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def train_one(key, x_tr, y_tr, x_te, y_te, *, batch, seed, out_dir, log):
    cfg = SCHEDULE[key]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MODELS[key]()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"],
    )
    steps_per_epoch = math.ceil(len(x_tr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], epochs=cfg["epochs"], steps_per_epoch=steps_per_epoch,
        pct_start=0.25,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    history = []
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    for epoch in range(cfg["epochs"]):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            xb = augment(x_tr[idx], gen)
            loss = loss_fn(model(xb), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        t_train = time.perf_counter() - t0
        acc = evaluate(model, x_te, y_te)
        history.append(
            dict(epoch=epoch + 1, loss=total / len(x_tr), test_acc=acc, seconds=t_train)
        )
        log(f"{key} epoch {epoch + 1}/{cfg['epochs']} loss {total / len(x_tr):.4f} "
            f"test_acc {acc:.4f} train {t_train:.1f}s")
    wall = time.perf_counter() - t_start
    # CPU seconds of this process: on a shared machine wall time overstates the cost.
    cpu = time.process_time() - cpu_start
    record = dict(
        key=key, family=model.family, params=params, feature_dim=model.feature_dim,
        epochs=cfg["epochs"], lr=cfg["lr"], weight_decay=cfg["wd"], batch=batch, seed=seed,
        optimizer="AdamW+OneCycle", label_smoothing=0.05,
        augmentation="horizontal flip",
        train_seconds=round(wall, 1), cpu_seconds=round(cpu, 1),
        torch_test_acc=history[-1]["test_acc"], history=history,
        torch_version=torch.__version__, threads=torch.get_num_threads(),
    )
    tmp = out_dir / f"{key}.pt.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, out_dir / f"{key}.pt")
    tmp = out_dir / f"{key}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out_dir / f"{key}.json")
    log(f"{key} done: {params} params, test_acc {record['torch_test_acc']:.4f}, "
        f"{wall:.0f}s wall, {cpu:.0f}s CPU")
    return record


def bench(key, x_tr, y_tr, batch, steps):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = MODELS[key]()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        xb = augment(x_tr[i * batch : (i + 1) * batch], gen)
        loss = loss_fn(model(xb), y_tr[i * batch : (i + 1) * batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / steps
    params = sum(p.numel() for p in model.parameters())
    print(f"{key}: {params} params, {per_step * 1000:.0f} ms/step, "
          f"~{per_step * math.ceil(60000 / batch):.0f} s/epoch", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEBIAN_DIR)
    ap.add_argument("--out", type=Path, default=Path("build/zoo"))
    ap.add_argument("--models", default=",".join(SCHEDULE))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", type=int, default=0, help="time N steps per model and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    keys = args.models.split(",")
    x_tr, y_tr = load_split(args.data, "train")
    x_te, y_te = load_split(args.data, "t10k")
    if args.bench:
        for key in keys:
            bench(key, x_tr, y_tr, args.batch, args.bench)
        return
    args.out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    log(f"train {tuple(x_tr.shape)} test {tuple(x_te.shape)} threads {args.threads}")
    t0 = time.perf_counter()
    for key in keys:
        train_one(key, x_tr, y_tr, x_te, y_te, batch=args.batch, seed=args.seed,
                  out_dir=args.out, log=log)
    log(f"zoo done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
