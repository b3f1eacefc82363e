"""``mypkg.models.Net``: a user's model, as the docs plug it in (``model._target_``)."""

import math

import torch
from torch import nn


class Net(nn.Module):
    """An MLP of ``depth`` hidden layers of ``width`` units; lrbatch passes ``in_shape`` and
    ``num_outputs``."""

    def __init__(
        self, in_shape: tuple[int, ...], num_outputs: int, depth: int = 2, width: int = 32
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(in_shape)
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        self.net = nn.Sequential(*layers, nn.Linear(features, num_outputs))
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
