"""Small models for learning-rate × batch-size sweeps.

Every model takes ``in_shape`` (the shape of one example, without the batch dimension) and
``num_outputs`` (classes, or regression outputs) from the trainer, plus its own
hyperparameters from ``conf/model/``, and returns raw outputs (logits) of shape
``[batch, num_outputs]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["CNN", "MLP", "ResNet"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _check_positive(setting: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"model {setting}={value!r} is not accepted: it must be an integer >= 1")


def _widths(setting: str, values: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(int(v) for v in values)
    for width in widths:
        _check_positive(setting, width)
    return widths


class MLP(nn.Module):
    """Fully connected network on the flattened input.

    Args:
        in_shape: Shape of one example; it is flattened to ``prod(in_shape)`` features.
        num_outputs: Width of the output layer.
        hidden: Width of each hidden layer, input side first; empty gives a linear model.
        activation: Nonlinearity after each hidden layer: ``relu``, ``gelu`` or ``tanh``.

    Raises:
        ValueError: If ``activation`` is unknown or a width is below 1.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"model activation={activation!r} is not accepted: use one of "
                f"{sorted(_ACTIVATIONS)}"
            )
        _check_positive("num_outputs", num_outputs)
        widths = (math.prod(in_shape), *_widths("hidden", hidden))
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), _ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, *in_shape]`` inputs to ``[batch, num_outputs]`` logits."""
        return self.net(x)


class CNN(nn.Module):
    """Plain convolutional network: per stage a 3x3 convolution, ReLU and 2x max-pool.

    Works on sequences and on images. ``in_shape`` of length 1, ``(L,)`` such as MNIST-1D, is
    read as one channel ``(1, L)``; length 2, ``(C, L)``, uses ``Conv1d``; length 3,
    ``(C, H, W)``, uses ``Conv2d``. The stages are followed by a hidden linear layer with ReLU and
    the output layer.

    Args:
        in_shape: Shape of one example.
        num_outputs: Width of the output layer.
        channels: Output channels of each convolution stage, input side first.
        hidden: Width of the linear layer after the convolutions.

    Raises:
        ValueError: If ``in_shape`` has a length other than 1-3, a spatial size is too small to
            be halved once per stage, or a width is below 1.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in in_shape)
        if len(shape) == 1:
            shape = (1, *shape)
        if len(shape) not in (2, 3):
            raise ValueError(
                f"CNN in_shape={tuple(in_shape)} is not accepted: use (L,), (C, L) or (C, H, W)"
            )
        widths = _widths("channels", channels)
        _check_positive("hidden", hidden)
        _check_positive("num_outputs", num_outputs)
        spatial = shape[1:]
        if min(spatial) < 2 ** len(widths):
            raise ValueError(
                f"CNN in_shape={tuple(in_shape)} is too small for {len(widths)} stages: each "
                f"spatial size must be at least {2 ** len(widths)} (one 2x pooling per stage)"
            )
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if len(spatial) == 1 else (nn.Conv2d, nn.MaxPool2d)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((shape[0], *widths[:-1]), widths, strict=True):
            layers += [conv(fan_in, fan_out, kernel_size=3, padding=1), nn.ReLU(), pool(2)]
        self._unsqueeze = len(in_shape) == 1
        self.features = nn.Sequential(*layers)
        flat = widths[-1] * math.prod(size // 2 ** len(widths) for size in spatial)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, *in_shape]`` inputs to ``[batch, num_outputs]`` logits."""
        if self._unsqueeze:
            x = x.unsqueeze(1)
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, fan_in: int, fan_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(fan_in, fan_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(fan_out),
            nn.ReLU(),
            nn.Conv2d(fan_out, fan_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(fan_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or fan_in != fan_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(fan_in, fan_out, 1, stride=stride, bias=False), nn.BatchNorm2d(fan_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Small CIFAR-style ResNet (He et al. 2016): 3 stages of widths w, 2w, 4w.

    A 3x3 stem, then ``blocks_per_stage`` basic blocks per stage (the 2nd and 3rd stages start
    with stride 2), global average pooling and a linear layer. ``blocks_per_stage=3`` gives
    ResNet-20. Meant for ``[C, 32, 32]`` images; global pooling lets other image sizes run too.

    Note: BatchNorm makes each example's output depend on its batch, which is part of what a
    batch-size sweep measures with this model.

    Args:
        in_shape: Shape of one image, ``(C, H, W)``.
        num_outputs: Width of the output layer.
        width: Channels of the first stage, ``w``.
        blocks_per_stage: Basic blocks in each of the 3 stages.

    Raises:
        ValueError: If ``in_shape`` is not 3-D or a width or count is below 1.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_outputs: int,
        width: int = 16,
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(
                f"ResNet in_shape={tuple(in_shape)} is not accepted: it needs images (C, H, W); "
                "use MLP or CNN for 1-D inputs"
            )
        _check_positive("width", width)
        _check_positive("blocks_per_stage", blocks_per_stage)
        _check_positive("num_outputs", num_outputs)
        layers: list[nn.Module] = [
            nn.Conv2d(int(in_shape[0]), width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        fan_in = width
        for stage, fan_out in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(fan_in, fan_out, stride))
                fan_in = fan_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(fan_in, num_outputs)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, C, H, W]`` images to ``[batch, num_outputs]`` logits."""
        return self.net(x)
