"""Five small Fashion-MNIST classifiers, one per architecture family (tools only; needs torch).

Every model maps ``image`` of shape (N, 1, 28, 28) to ``logits`` of shape (N, 10) and ends
with a pooled feature vector followed by a fully-connected head, so that xnetmap can split it
into a feature extractor F and a classifier C. Feature widths differ on purpose:

========== ======================================= ==============
key        family                                  pooled width D
========== ======================================= ==============
resnet_v2  ResNet-v2 (pre-activation residual)     256
inception  Inception (1x1 / 3x3 / 3x3-3x3 / pool)  192
vgg        VGG (plain conv stack, 2-layer FC head) 128
mobilenet  MobileNet-v2/v3 (inverted residuals)    160
mixer      MLP-Mixer (no convolutions)             96
========== ======================================= ==============
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


# ---------------------------------------------------------------- ResNet-v2
class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity mappings"): BN-ReLU-conv twice."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        # NOTE: v2 blocks take the projection shortcut from the pre-activated tensor.
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet-v2-50/101/152 style): BN-ReLU-1x1, 3x3, 1x1 expand."""

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + skip


class ResNetV2(nn.Module):
    feature_dim = 256
    family = "ResNet-v2 (pre-activation residual and bottleneck blocks)"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 32, 3, 1, 1, bias=False)
        self.blocks = nn.Sequential(
            PreActBlock(32, 32, 2),  # 14x14
            PreActBlock(32, 64, 2),  # 7x7
            PreActBottleneck(64, 32, 128, 1),
            PreActBottleneck(128, 64, 256, 2),  # 4x4
        )
        self.bn = nn.BatchNorm2d(256)
        self.fc = nn.Linear(256, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- Inception
def conv_bn(c_in: int, c_out: int, k, stride=1, pad=0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, pad, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class InceptionModule(nn.Module):
    """Inception-v2/v3 module: 1x1, 1x1-3x3, 1x1-3x3-3x3 (factorised 5x5), pool-1x1."""

    def __init__(self, c_in: int, b1: int, b3r: int, b3: int, b5r: int, b5: int, bp: int):
        super().__init__()
        self.branch1 = conv_bn(c_in, b1, 1)
        self.branch3 = nn.Sequential(conv_bn(c_in, b3r, 1), conv_bn(b3r, b3, 3, pad=1))
        self.branch5 = nn.Sequential(
            conv_bn(c_in, b5r, 1), conv_bn(b5r, b5, 3, pad=1), conv_bn(b5, b5, 3, pad=1)
        )
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_bn(c_in, bp, 1))
        self.out_channels = b1 + b3 + b5 + bp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1
        )


class Inception(nn.Module):
    feature_dim = 192
    family = "Inception (multi-branch modules, factorised 5x5)"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, 32, 3, pad=1), nn.MaxPool2d(2))  # 14x14
        self.mixed_a = InceptionModule(32, 24, 24, 32, 16, 24, 16)  # 96 ch
        self.reduce = nn.MaxPool2d(2)  # 7x7
        self.mixed_b = InceptionModule(96, 48, 48, 64, 32, 48, 32)  # 192 ch
        self.mixed_c = InceptionModule(192, 48, 48, 64, 32, 48, 32)  # 192 ch
        self.fc = nn.Linear(192, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixed_c(self.mixed_b(self.reduce(self.mixed_a(self.stem(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- VGG
class VGG(nn.Module):
    feature_dim = 128
    family = "VGG (plain conv stack, two-layer fully-connected head)"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 32, 3, pad=1),
            conv_bn(32, 32, 3, pad=1),
            nn.MaxPool2d(2),  # 14x14
            conv_bn(32, 64, 3, pad=1),
            conv_bn(64, 64, 3, pad=1),
            nn.MaxPool2d(2),  # 7x7
            conv_bn(64, 128, 3, pad=1),
            conv_bn(128, 128, 3, pad=1),
        )
        self.classifier = nn.Sequential(
            nn.Linear(128, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- MobileNet
class InvertedResidual(nn.Module):
    """MobileNet-v2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; skip if same shape."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.use_skip = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.Hardswish(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Hardswish(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_skip else out


class MobileNet(nn.Module):
    feature_dim = 160
    family = "MobileNet (depthwise-separable inverted residuals, V3-style head)"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.Hardswish(inplace=True),
            InvertedResidual(16, 24, 2, 2),  # 14x14
            InvertedResidual(24, 24, 1, 3),
            InvertedResidual(24, 48, 2, 3),  # 7x7
            InvertedResidual(48, 48, 1, 3),
            InvertedResidual(48, 64, 1, 3),
            nn.Conv2d(64, 160, 1, bias=False),
            nn.BatchNorm2d(160),
            nn.Hardswish(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Linear(160, 256),
            nn.Hardswish(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(256, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- MLP-Mixer
class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(
            nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(
            nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, tokens, dim)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    feature_dim = 96
    family = "MLP-Mixer (non-convolutional; patch embedding is a linear map of 4x4 patches)"

    def __init__(self, patch: int = 4, dim: int = 96, depth: int = 4) -> None:
        super().__init__()
        self.patch = patch
        tokens = (28 // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, 64, 192) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p = x.shape[0], self.patch
        # (N,1,28,28) -> (N, 49, 16): non-overlapping patches via reshape/transpose, no conv.
        x = x.reshape(n, 28 // p, p, 28 // p, p).permute(0, 1, 3, 2, 4).reshape(n, -1, p * p)
        x = self.norm(self.blocks(self.embed(x)))
        return self.fc(x.mean(1))


MODELS = {
    "resnet_v2": ResNetV2,
    "inception": Inception,
    "vgg": VGG,
    "mobilenet": MobileNet,
    "mixer": Mixer,
}
