"""Classifiers f = h ∘ g with penultimate features exposed.

Every model has `features(x) -> (N, C)` (after global pooling, before the head), a linear
`head`, and `feature_dim`. Inputs are normalised float images `(N, C_in, H, W)`.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Base: subclasses build `self.body` (image -> (N, C) features) and set `feature_dim`."""

    body: nn.Module
    feature_dim: int

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, num_classes)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class SmallCNN(Classifier):
    """Three conv blocks and global average pooling: fast on 2 CPU cores for 8x8 to 28x28 images."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__(4 * width, num_classes)
        self.body = nn.Sequential(
            *_conv_bn(in_channels, width),
            *_conv_bn(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(Classifier):
    """ResNet-18 in its CIFAR form: 3x3 stem with stride 1 and no max-pool; 512-d features."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__(512, num_classes)
        layers: list[nn.Module] = _conv_bn(in_channels, 64)
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


MODEL_CLASSES = {"cnn": SmallCNN, "resnet18": ResNet18}


def cnn_width(size: int) -> int:
    return 16 if size <= 16 else 32  # 8x8 digits need a quarter of the compute of 28x28 ones


def feature_dim(name: str, size: int) -> int:
    """Penultimate feature dimension C of a model, without building it."""
    return 4 * cnn_width(size) if name == "cnn" else 512


def build_model(name: str, in_channels: int, num_classes: int, size: int = 32) -> Classifier:
    """A fresh model for images of `size` pixels a side."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CLASSES)}")
    if name == "cnn":
        return SmallCNN(in_channels, num_classes, width=cnn_width(size))
    return MODEL_CLASSES[name](in_channels=in_channels, num_classes=num_classes)
