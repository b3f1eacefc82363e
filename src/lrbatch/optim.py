"""Sign-based optimizers: the case where the learning-rate surge is predicted.

For sign-based updates the best learning rate first rises and then falls as the batch grows
(Li et al. 2024, arXiv:2405.14578), unlike the monotone square-root or linear rules of SGD and
Adam. ``Lion`` and ``SignSGD`` let a sweep test that prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import torch
from torch.optim.optimizer import ParamsT

__all__ = ["Lion", "SignSGD"]


def _check_lr(lr: float) -> None:
    if not lr > 0.0:
        raise ValueError(f"optimizer lr={lr!r} is not accepted: it must be > 0")


def _check_beta(setting: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"optimizer {setting}={value!r} is not accepted: it must be in [0, 1)")


class _SignOptimizer(torch.optim.Optimizer):
    """Shared step loop: subclasses say how one parameter moves given its gradient."""

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Take one optimization step.

        Args:
            closure: Optional function that recomputes the loss (with gradients) and returns it.

        Returns:
            The loss returned by ``closure``, or None without one.

        Raises:
            RuntimeError: If a parameter has a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                self._update(param, param.grad, group)
        return loss


class Lion(_SignOptimizer):
    """Lion: EvoLved Sign Momentum (Chen et al. 2023, arXiv:2302.06675).

    Per parameter, with gradient ``g`` and momentum ``m`` (zero at the start)::

        p <- p * (1 - lr * weight_decay)                  # decoupled weight decay
        p <- p - lr * sign(beta1 * m + (1 - beta1) * g)   # every coordinate moves by lr
        m <- beta2 * m + (1 - beta2) * g

    Because every coordinate moves by exactly ``lr``, Lion's useful ``lr`` is typically 3-10x
    smaller than AdamW's, and its ``weight_decay`` 3-10x larger.

    Args:
        params: Parameters or parameter groups to optimize.
        lr: Step size per coordinate per step (> 0).
        betas: ``(beta1, beta2)``: interpolation for the update sign and momentum decay, each in
            [0, 1).
        weight_decay: Decoupled weight decay per unit of ``lr`` (>= 0).

    Raises:
        ValueError: If ``lr``, ``betas`` or ``weight_decay`` is out of range.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        _check_lr(lr)
        beta1, beta2 = betas
        _check_beta("betas[0]", beta1)
        _check_beta("betas[1]", beta2)
        if weight_decay < 0.0:
            raise ValueError(
                f"optimizer weight_decay={weight_decay!r} is not accepted: it must be >= 0"
            )
        defaults = {"lr": lr, "betas": (float(beta1), float(beta2)), "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        lr, (beta1, beta2) = group["lr"], group["betas"]
        state = self.state[param]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        exp_avg = state["exp_avg"]
        param.mul_(1.0 - lr * group["weight_decay"])
        direction = exp_avg.mul(beta1).add_(grad, alpha=1.0 - beta1).sign_()
        param.add_(direction, alpha=-lr)
        exp_avg.mul_(beta2).add_(grad, alpha=1.0 - beta2)


class SignSGD(_SignOptimizer):
    """signSGD and, with momentum, Signum (Bernstein et al. 2018, arXiv:1802.04434).

    Per parameter, with gradient ``g`` and momentum ``m`` (zero at the start)::

        m <- momentum * m + (1 - momentum) * g   # with momentum = 0, m = g
        p <- p - lr * sign(m)

    Args:
        params: Parameters or parameter groups to optimize.
        lr: Step size per coordinate per step (> 0).
        momentum: Decay of the gradient average whose sign is taken, in [0, 1).

    Raises:
        ValueError: If ``lr`` or ``momentum`` is out of range.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0) -> None:
        _check_lr(lr)
        _check_beta("momentum", momentum)
        super().__init__(params, {"lr": lr, "momentum": momentum})

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        if momentum == 0.0:
            param.add_(grad.sign(), alpha=-group["lr"])
            return
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(grad, alpha=1.0 - momentum)
        param.add_(buffer.sign(), alpha=-group["lr"])
