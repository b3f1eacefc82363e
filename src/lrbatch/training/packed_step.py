"""Every member of a pack takes its optimizer step at once, over the pack's stacked parameters.

A pack's members each have their own optimizer over their own parameters (rows of the pack's
stacks, :mod:`lrbatch.training.pack`); stepping them one after another costs each member a Python
call per parameter and per state tensor: on a CPU core, as much as a small MLP's forward pass. For
the optimizers lrbatch ships (``torch.optim.SGD``, ``Adam``, ``AdamW``, ``RMSprop``,
:class:`lrbatch.optim.Lion`, :class:`lrbatch.optim.SignSGD`), :func:`packed_step` writes the same
update out once over the ``[K, ...]`` stacks, the learning rate a ``[K, 1, ...]`` column: the
same operations in the same order as torch's single-tensor step, the per-member scalars applied
by the same kernels (``addcmul`` with a column of learning rates gives ``add(alpha=-lr)``'s
result), so each member's numbers are those of its own optimizer (``tests/test_pack.py``).

Anything else (another optimizer class, a subclass, several parameter groups, an option torch
computes differently: ``fused``, ``capturable``, ``differentiable``, tensor hyperparameters,
parameters in 16 bits) is not packed: :func:`packed_step` returns None and the members step
their own optimizers, one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lrbatch.optim import Lion, SignSGD

__all__ = ["PackedStep", "packed_step"]

# Per optimizer class: the hyperparameters its packed update reads. A group with any other key,
# or one of ``_NEUTRAL``'s keys at another value, is not packed.
_READS: dict[type, frozenset[str]] = {
    torch.optim.SGD: frozenset({"momentum", "dampening", "weight_decay", "nesterov", "maximize"}),
    torch.optim.Adam: frozenset(
        {"betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"}
    ),
    torch.optim.AdamW: frozenset(
        {"betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"}
    ),
    torch.optim.RMSprop: frozenset(
        {"alpha", "eps", "weight_decay", "momentum", "centered", "maximize"}
    ),
    Lion: frozenset({"betas", "weight_decay"}),
    SignSGD: frozenset({"momentum"}),
}
_NEUTRAL: dict[str, tuple[Any, ...]] = {  # options that change torch's arithmetic when set
    "foreach": (None, False, True),  # (on a CPU, torch steps one tensor at a time either way)
    "fused": (None, False),
    "capturable": (False,),
    "differentiable": (False,),
}


def _settings(optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """The hyperparameters of a one-group optimizer this module packs (lr left out), or None."""
    reads = _READS.get(type(optimizer))
    if reads is None or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    settings = {}
    for key, value in group.items():
        if key in ("params", "lr"):
            continue
        if key in _NEUTRAL:
            if value not in _NEUTRAL[key]:
                return None
        elif key not in reads or any(isinstance(v, torch.Tensor) for v in _values(value)):
            return None
        else:
            settings[key] = value
    if not isinstance(group["lr"], float | int) or reads - settings.keys():
        return None
    return settings


def _values(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


class PackedStep:
    """The members' optimizer steps over the stacks (made by :func:`packed_step`).

    Attributes:
        stacks: the pack's parameter stacks, ``[K, ...]`` each, in the members' parameter order.
        settings: the optimizer's hyperparameters (the same for every member), lr left out.
        state: per stack, its state tensors (momentum, averages), ``[K, ...]`` like it.
        steps: the steps taken so far (Adam's and RMSprop's step count).
    """

    def __init__(
        self,
        kind: type,
        settings: dict[str, Any],
        stacks: Sequence[torch.Tensor],
        stacked: bool = True,
    ) -> None:
        self.kind, self.settings, self.stacks = kind, settings, list(stacks)
        self.stacked = stacked  # False: one model's own parameters, no member dimension
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.stacks]
        self.steps = 0
        self._update: Callable[[torch.Tensor, torch.Tensor, dict, list[float]], None] = {
            torch.optim.SGD: self._sgd,
            torch.optim.Adam: self._adam,
            torch.optim.AdamW: self._adam,
            torch.optim.RMSprop: self._rmsprop,
            Lion: self._lion,
            SignSGD: self._sign_sgd,
        }[kind]
        self._columns: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One optimizer step of every member: member k at learning rate ``lrs[k]``."""
        self.steps += 1
        lrs = [float(lr) for lr in lrs]
        for stack, state in zip(self.stacks, self.state, strict=True):
            if stack.grad is not None:
                self._update(stack, stack.grad, state, lrs)

    def keep(self, rows: Sequence[int], stacks: Sequence[torch.Tensor]) -> PackedStep:
        """The step for a smaller pack: members ``rows`` of this one, over the new ``stacks``."""
        assert self.stacked, "a model alone does not shrink"
        kept = PackedStep(self.kind, self.settings, stacks)
        kept.steps = self.steps
        index = torch.tensor(list(rows), device=self.stacks[0].device)
        kept.state = [{k: v.index_select(0, index) for k, v in s.items()} for s in self.state]
        return kept

    def _lr(self, lrs: list[float], like: torch.Tensor) -> torch.Tensor:
        """Per-member scalars as a ``[K, 1, ...]`` column in ``like``'s dtype (cached: a constant
        schedule makes the same few columns at every step)."""
        key = (tuple(lrs), like.dim(), like.dtype)
        column = self._columns.get(key)
        if column is None:
            if len(self._columns) > 64:
                self._columns.clear()
            column = torch.tensor(lrs, dtype=like.dtype, device=like.device)
            shape = [-1, *[1] * (like.dim() - 1)] if self.stacked else [1] * like.dim()
            column = self._columns[key] = column.view(shape)
        return column

    def _per_member(
        self,
        function: Callable[..., Any],
        target: torch.Tensor,
        *others: torch.Tensor,
        scalars: list,
    ) -> None:
        """``target[k].function(others[k]..., value=scalars[k])`` for each member, in one call."""
        if not self.stacked:  # (one member: the whole tensor is its)
            function([target], *[[o] for o in others], scalars)
            return
        function(list(target.unbind(0)), *[list(o.unbind(0)) for o in others], scalars)

    def _sgd(self, param: torch.Tensor, grad: torch.Tensor, state: dict, lrs: list[float]) -> None:
        s = self.settings
        grad = -grad if s["maximize"] else grad
        if s["weight_decay"] != 0:
            grad = grad.add(param, alpha=s["weight_decay"])
        if s["momentum"] != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.detach().clone()
            else:
                buf.mul_(s["momentum"]).add_(grad, alpha=1 - s["dampening"])
            grad = grad.add(buf, alpha=s["momentum"]) if s["nesterov"] else buf
        param.addcmul_(grad, self._lr(lrs, param), value=-1)

    def _adam(self, param: torch.Tensor, grad: torch.Tensor, state: dict, lrs: list[float]) -> None:
        s = self.settings
        beta1, beta2 = s["betas"]
        grad = -grad if s["maximize"] else grad
        if not state:
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if s["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(param)
        if s["weight_decay"] != 0:
            if s["decoupled_weight_decay"]:
                decay = [1 - lr * s["weight_decay"] for lr in lrs]
                param.mul_(self._lr(decay, param))
            else:
                grad = grad.add(param, alpha=s["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.steps)  # (torch keeps it as a float32 tensor and reads it as a float)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if s["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            denom = (state["max_exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(s["eps"])
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(s["eps"])
        step_sizes = [-(lr / bias_correction1) for lr in lrs]
        self._per_member(torch._foreach_addcdiv_, param, exp_avg, denom, scalars=step_sizes)

    def _rmsprop(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict, lrs: list[float]
    ) -> None:
        s = self.settings
        alpha = s["alpha"]
        grad = -grad if s["maximize"] else grad
        if not state:
            state["square_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if s["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(param)
            if s["centered"]:
                state["grad_avg"] = torch.zeros_like(param)
        if s["weight_decay"] != 0:
            grad = grad.add(param, alpha=s["weight_decay"])
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if s["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(s["eps"])
        if s["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf.mul_(s["momentum"]).addcdiv_(grad, avg)
            param.addcmul_(buf, self._lr(lrs, param), value=-1)
        else:
            scalars = [-lr for lr in lrs]
            self._per_member(torch._foreach_addcdiv_, param, grad, avg, scalars=scalars)

    def _lion(self, param: torch.Tensor, grad: torch.Tensor, state: dict, lrs: list[float]) -> None:
        s = self.settings
        beta1, beta2 = s["betas"]
        if not state:
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        exp_avg = state["exp_avg"]
        param.mul_(self._lr([1.0 - lr * s["weight_decay"] for lr in lrs], param))
        direction = exp_avg.mul(beta1).add_(grad, alpha=1.0 - beta1).sign_()
        param.addcmul_(direction, self._lr(lrs, param), value=-1)
        exp_avg.mul_(beta2).add_(grad, alpha=1.0 - beta2)

    def _sign_sgd(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict, lrs: list[float]
    ) -> None:
        momentum = self.settings["momentum"]
        if momentum == 0.0:
            param.addcmul_(grad.sign(), self._lr(lrs, param), value=-1)
            return
        if not state:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(grad, alpha=1.0 - momentum)
        param.addcmul_(buffer.sign(), self._lr(lrs, param), value=-1)


def packed_step(
    optimizers: Sequence[torch.optim.Optimizer],
    stacks: Sequence[torch.Tensor],
    params: Sequence[Sequence[torch.Tensor]],
) -> PackedStep | None:
    """One step for all of a pack's members, or None where they must step one at a time.

    A model alone (one optimizer, no stacks) gets the same step over its own parameters: the
    arithmetic of its optimizer without ``torch.optim``'s per-step bookkeeping (~0.1 ms a step
    on a CPU core, a tenth of a small MLP's step at batch 16), and the same numbers as it has
    in a pack.

    Args:
        optimizers: the members' own optimizers (Fabric's wrappers unwrapped), with no step
            taken yet.
        stacks: the pack's parameter stacks, ``[K, ...]``, K = the number of optimizers (none:
            a model alone).
        params: member k's parameters (rows of ``stacks``), in the order of ``stacks``; its
            optimizer must hold exactly these, in one group.

    Returns:
        The packed step, or None: no members, an optimizer or option it does not write out
        (see the module's docstring), members whose settings differ, or parameters in 16 bits.
    """
    alone = len(optimizers) == 1 and not stacks and len(params) == 1
    if alone:
        stacks = params[0]
    if not optimizers or not stacks or len(params) != len(optimizers):
        return None
    kinds = {type(optimizer) for optimizer in optimizers}
    settings = [_settings(optimizer) for optimizer in optimizers]
    if len(kinds) != 1 or settings[0] is None or any(s != settings[0] for s in settings):
        return None
    if any(stack.dtype not in (torch.float32, torch.float64) for stack in stacks):
        return None
    for optimizer, own in zip(optimizers, params, strict=True):
        held = optimizer.param_groups[0]["params"]
        if optimizer.state or len(held) != len(own):
            return None
        if any(a is not b for a, b in zip(held, own, strict=True)):
            return None
    return PackedStep(kinds.pop(), settings[0], stacks, stacked=not alone)
