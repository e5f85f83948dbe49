"""Classifiers f = h ∘ g with penultimate features exposed.

Every model has `features(x) -> (N, C)` (after global pooling, before the head), a linear
`head`, and `feature_dim`. Inputs are normalised float images `(N, C_in, H, W)`. Besides the
built-in models, `torchvision:NAME` wraps any torchvision classification model.
"""

from __future__ import annotations

import functools

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


def blocks(model: Classifier) -> list[tuple[str, nn.Module]]:
    """The model's blocks, input to output, as (name, module) whose outputs are feature maps:
    the conv blocks of the small CNN (each ends in a ReLU), the four stages of ResNet-18, a
    torchvision model's `layer1..4`, else the children of its `features` (or, without one,
    its top-level children) that have weights; callers keep those whose outputs are 4-D.
    The layer-wise audit pools each one."""
    if isinstance(model, SmallCNN):
        relus = [m for m in model.body if isinstance(m, nn.ReLU)]
        return [(f"block{i + 1}", m) for i, m in enumerate(relus)]
    if isinstance(model, ResNet18):
        pairs = [m for m in model.body if isinstance(m, BasicBlock)][1::2]  # a stage's last
        return [(f"stage{i + 1}", m) for i, m in enumerate(pairs)]
    net = model.body
    if all(hasattr(net, f"layer{i}") for i in range(1, 5)):  # the ResNet family
        return [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    features = getattr(net, "features", None)
    # VGG, MobileNet, EfficientNet, DenseNet, ...: the children with weights (VGG's
    # activations and pools are children of their own; they add no depth worth a point)
    children = (((f"features.{name}", m) for name, m in features.named_children())
                if isinstance(features, nn.Sequential) else net.named_children())
    return [(name, m) for name, m in children if next(m.parameters(), None) is not None]


def cnn_width(size: int) -> int:
    return 16 if size <= 16 else 32  # 8x8 digits need a quarter of the compute of 28x28 ones


def feature_dim(name: str, size: int) -> int:
    """Penultimate feature dimension C of a model, without building it (a torchvision model is
    built on the meta device). ValueError for an unknown torchvision model or one without
    nn.Linear."""
    if is_torchvision(name):
        return _torchvision_feature_dim(name[len(TORCHVISION_PREFIX):])
    return 4 * cnn_width(size) if name == "cnn" else 512


def build_model(name: str, in_channels: int, num_classes: int, size: int = 32) -> Classifier:
    """A fresh model for images of `size` pixels a side."""
    if is_torchvision(name):
        return TorchvisionClassifier(name[len(TORCHVISION_PREFIX):], in_channels, num_classes)
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CLASSES)}, "
                         f"or {TORCHVISION_PREFIX}NAME")
    if name == "cnn":
        return SmallCNN(in_channels, num_classes, width=cnn_width(size))
    return MODEL_CLASSES[name](in_channels=in_channels, num_classes=num_classes)


# ---------------------------------------------------------------------------- torchvision models

TORCHVISION_PREFIX = "torchvision:"  # model=torchvision:NAME, any classification constructor


def is_torchvision(name: str) -> bool:
    return name.startswith(TORCHVISION_PREFIX)


def _last_linear(net: nn.Module, name: str) -> tuple[str, nn.Linear]:
    """(dotted path, module) of the last nn.Linear: its input is the penultimate features."""
    found = [(path, m) for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"torchvision model {name!r} has no nn.Linear layer, so dimalign cannot "
                         "find its penultimate features; choose another (e.g. resnet18)")
    return found[-1]


def torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)  # classification only


def _torchvision_net(name: str, num_classes: int) -> nn.Module:
    import torchvision.models

    if name not in torchvision_names():
        raise ValueError(f"torchvision has no classification model {name!r}; choose one of "
                         "torchvision.models.list_models(module=torchvision.models), e.g. "
                         "resnet18, mobilenet_v3_small, efficientnet_b0, vit_b_16")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


class TorchvisionClassifier(Classifier):
    """A torchvision classifier split at its last nn.Linear: that layer becomes `head`, and
    `body` is the model with it replaced by nn.Identity, so `body(x)` are the features it saw.

    Weights are `body.*` and `head.*`; `from_torchvision_state` maps a plain torchvision state
    dict (e.g. `fc.weight`) onto them. One-channel images are repeated to three."""

    def __init__(self, name: str, in_channels: int = 3, num_classes: int = 10):
        if in_channels not in (1, 3):
            raise ValueError(f"torchvision models take 1- or 3-channel images, not {in_channels}")
        net = _torchvision_net(name, num_classes)
        path, linear = _last_linear(net, name)
        super().__init__(linear.in_features, num_classes)
        parent, _, attr = path.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
        self.body, self.head = net, linear
        self.head_path = path
        self.in_channels = in_channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out = self.body(x)
        if not isinstance(out, torch.Tensor):  # e.g. Inception/GoogLeNet training outputs
            out = out[0]
        return out.flatten(1)  # (N, C)

    def from_torchvision_state(self, state: dict) -> dict:
        """A state dict of the plain torchvision model (or of this wrapper) -> this wrapper's."""
        state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel's prefix
        if all(k.startswith(("body.", "head.")) for k in state):
            return state
        head = self.head_path + "."
        return {("head." + k[len(head):] if k.startswith(head) else "body." + k): v
                for k, v in state.items()}

    def to_torchvision_key(self, key: str) -> str:
        """This wrapper's key -> the plain torchvision model's (for messages)."""
        if key.startswith("head."):
            return self.head_path + key[4:]
        return key.removeprefix("body.")


@functools.lru_cache(maxsize=32)
def _torchvision_feature_dim(name: str) -> int:
    with torch.device("meta"):  # builds the layers without allocating their weights
        return _last_linear(_torchvision_net(name, 10), name)[1].in_features


LARGEST_IMAGE = 1024  # what image_size allows


@functools.lru_cache(maxsize=64)
def input_size_problem(name: str, size: int) -> str:
    """What model `name` needs of size x size images it cannot take ('' when it can).

    Found by forwarding a zero image on the meta device: shapes only, no weights and no compute
    (milliseconds even for the largest), and exact for any architecture, where a table of
    minimum sizes would go stale. The built-in models pool adaptively and take any size."""
    if not is_torchvision(name):
        return ""
    try:
        with torch.device("meta"):
            net = _torchvision_net(name[len(TORCHVISION_PREFIX):], 10).eval()
    except NotImplementedError:  # built from computed values (RegNet): cannot be checked so
        return ""

    def runs(side: int) -> bool:
        try:
            with torch.no_grad():
                net(torch.zeros(1, 3, side, side, device="meta"))
            return True
        except (RuntimeError, AssertionError, ValueError):  # "output size is too small", ViT's
            return False  # torch._assert on the image size, a reshape that does not fit

    if runs(size):
        return ""
    fixed = getattr(net, "image_size", None)  # a vision transformer takes one size only
    if isinstance(fixed, int):
        return f"needs images of exactly {fixed}x{fixed}"
    # a size it runs on: the largest, else ImageNet's (MaxViT's windows fit 224, not 1024)
    works = next((side for side in (LARGEST_IMAGE, 224) if runs(side)), None)
    if works is None:
        return f"does not run on images of {size}x{size}"
    # the sizes it runs on are taken to be one range around `works`: find both its ends
    low_fail, low = (size if size < works else 0), works
    while low - low_fail > 1:
        middle = (low_fail + low) // 2
        low_fail, low = (low_fail, middle) if runs(middle) else (middle, low)
    if runs(LARGEST_IMAGE):
        return f"needs images of at least {low}x{low}"
    high, high_fail = works, (size if size > works else LARGEST_IMAGE)
    while high_fail - high > 1:
        middle = (high + high_fail) // 2
        high, high_fail = (middle, high_fail) if runs(middle) else (high, middle)
    return f"needs images of {low}x{low} to {high}x{high}"
