"""A user's own model and data, plugged in through ``_target_`` (docs/configuration.md)."""

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class LabelSmoothedNet(L.LightningModule):
    """A LightningModule with its own loss in ``training_step``; lrbatch supplies the optimizer."""

    def __init__(self, in_shape: tuple[int, ...], num_outputs: int, smoothing: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_shape[0], 32), nn.ReLU(), nn.Linear(32, num_outputs)
        )
        self.smoothing = smoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y, label_smoothing=self.smoothing)


class MemoryLimitedMLP(nn.Module):
    """An MLP on a pretend GPU too small for it: a forward pass over more than ``max_rows``
    examples in training, or ``max_eval_rows`` in evaluation, raises CUDA's out-of-memory error
    (None: no limit)."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_outputs: int,
        max_rows: int | None = None,
        max_eval_rows: int | None = None,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(in_shape), 32), nn.ReLU(), nn.Linear(32, num_outputs)
        )
        self.max_rows, self.max_eval_rows = max_rows, max_eval_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        limit = self.max_rows if self.training else self.max_eval_rows
        if limit is not None and len(x) > limit:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {len(x)} rows; this GPU holds {limit}."
            )
        return self.net(x)


def blobs(num_samples: int = 512, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A user's data as four tensors: (x_train, y_train, x_val, y_val), 3 Gaussian classes."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (num_samples,), generator=generator)
    x = torch.randn(num_samples, 8, generator=generator) + 2.0 * F.one_hot(y, 8).float()
    split = num_samples * 3 // 4
    return x[:split], y[:split], x[split:], y[split:]


# A quadratic loss whose noise scale is known in closed form: linear regression on Gaussian
# inputs x ~ N(0, Λ), Λ = diag(QUADRATIC_SCALES), targets y = xᵀw* + σ·ε, mean squared error,
# weights starting at 0 (δ = w − w* = −w*). Per-example loss (xᵀδ − σε)², gradient
# 2x(xᵀδ − σε); so G = 2Λδ, H = 2Λ and, by Isserlis' theorem,
# Σ = 4[(δᵀΛδ + σ²)Λ + ΛδδᵀΛ]. Hence
#   B_simple = tr(Σ)/|G|² = [(δᵀΛδ + σ²) tr Λ + |Λδ|²] / |Λδ|²,
#   ε_max = |G|²/(GᵀHG) = |Λδ|² / (2 δᵀΛ³δ).
QUADRATIC_SCALES = torch.logspace(-0.5, 0.5, 32)  # Λ's diagonal: curvature over a decade
QUADRATIC_TEACHER = torch.linspace(-1.0, 1.0, 32)  # w*
QUADRATIC_NOISE = 3.0  # σ


def quadratic(num_samples: int = 33_792, val_samples: int = 1024, seed: int = 0) -> tuple:
    """(x_train, y_train, x_val, y_val) of the quadratic above (regression: float y)."""
    generator = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(num_samples, len(QUADRATIC_SCALES), generator=generator)
        * QUADRATIC_SCALES.sqrt()
    )
    y = x @ QUADRATIC_TEACHER + QUADRATIC_NOISE * torch.randn(num_samples, generator=generator)
    split = num_samples - val_samples
    return x[:split], y[:split], x[split:], y[split:]


def quadratic_truth() -> dict[str, float]:
    """|G|², tr(Σ), B_simple and ε_max of :func:`quadratic` at :class:`LinearRegression`'s
    initial weights (the formulas above)."""
    scales, delta = QUADRATIC_SCALES.double(), -QUADRATIC_TEACHER.double()
    curved = scales * delta  # Λδ
    grad_sq = 4 * float(curved @ curved)
    trace_sigma = 4 * (
        (float(delta @ curved) + QUADRATIC_NOISE**2) * float(scales.sum()) + float(curved @ curved)
    )
    eps_max = float(curved @ curved) / (2 * float(curved @ (scales**2 * delta)))
    return {
        "grad_sq": grad_sq,
        "trace_sigma": trace_sigma,
        "b_simple": trace_sigma / grad_sq,
        "eps_max": eps_max,
    }


class LinearRegression(nn.Module):
    """xᵀw without bias, starting at w = 0: the model of :func:`quadratic`."""

    def __init__(self, in_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(in_shape), num_outputs, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def digit_images(num_samples: int = 400, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits as 1×8×8 images (x_train, y_train, x_val, y_val): a tiny image
    dataset for the convolutional models, with no download."""
    from lrbatch.data import digits

    data = digits(seed=seed)
    split = num_samples * 3 // 4
    x = data.x_train[:num_samples].view(-1, 1, 8, 8)
    return x[:split], data.y_train[:split], x[split:], data.y_train[split:num_samples]


class DropoutNet(nn.Module):
    """A model that draws random numbers in its forward pass (dropout): it cannot be packed
    exactly (one draw per member alone, one per pack)."""

    def __init__(self, in_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(math.prod(in_shape), num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NormedNet(nn.Module):
    """A user's model with BatchNorm (buffers updated in its forward pass)."""

    def __init__(self, in_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(math.prod(in_shape), 16)
        self.norm = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.hidden(x.flatten(1)))))
