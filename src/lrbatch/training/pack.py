"""Packed models: K copies of one model, one per learning rate, trained in one forward pass.

Trials at one (effective batch, seed) start from the same weights and read the same examples
(:mod:`lrbatch.training.attempt`), so K of them can train as one *pack*: every batch is read once
and every layer runs once over the K members. Each member stays an ordinary ``nn.Module`` with its
own parameters, optimizer and evaluation; only where its parameters' numbers live changes:

- each parameter position (``net.0.weight``...) becomes one stacked leaf tensor ``[K, ...]``
  that the packed forward reads, and member k's parameter is the view of row k of it (its
  ``.data``), so its optimizer updates the stack in place and no weights are copied per step;
- after a backward pass, :meth:`Pack.share_grads` gives member k's parameters rows k of the
  stacked gradients: each member's optimizer, noise measurement and evaluation see plain
  parameters with plain gradients;
- buffers (BatchNorm's running statistics) are stacked the same way.

The packed forward is written out for the shipped models (:mod:`lrbatch.models`): linear layers
as one batched matmul over ``[K, N, features]`` (the first layer reads the shared input in one
matmul), convolutions as grouped convolutions (member weights concatenated along the output
channels, ``groups=K``), BatchNorm over ``K × C`` channels (per-member statistics exactly).
Any other model packs through ``torch.func.vmap`` of ``functional_call`` where it can. Whether a
model packs is checked, never assumed: :func:`check_pack` compares a pack's outputs, gradients
and buffers with each member alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lrbatch.models import CNN, MLP, ResNet, _BasicBlock

__all__ = ["Pack", "check_pack", "pack_models"]

# Layers that act on each value alone: they run on packed activations unchanged.
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Identity)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)


class _NotPackableError(Exception):
    """A layer the written-out packed forward does not handle."""


class Pack:
    """K member models that train as one: ``pack(x)`` gives every member's outputs, ``[K, N, ...]``.

    One member is its model as it is (``model(x)[None]``): :func:`lrbatch.training.loop.train` is
    the one-member case of the packed loop.

    Attributes:
        members: the K models; their parameters are views of the pack's stacks (K > 1).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        self.members = list(members)
        self.size = len(self.members)
        self._stacks: dict[str, torch.Tensor] = {}  # parameter name -> leaf [K, ...]
        self._buffers: dict[str, torch.Tensor] = {}  # buffer name -> [K, ...]
        self._shared = False  # whether the members' parameters hold rows of the stacked grads
        self._params: list[list[torch.Tensor]] = [list(self.members[0].parameters())]
        if type(self) is Pack:  # a model alone, as it is
            return
        named = [dict(m.named_parameters()) for m in self.members]
        for name in named[0]:
            rows = [params[name] for params in named]
            stack = torch.stack([p.detach() for p in rows]).requires_grad_(rows[0].requires_grad)
            for k, param in enumerate(rows):
                param.data = stack.data[k]  # the member's parameter is row k of the stack
            self._stacks[name] = stack
        for name, _ in self.members[0].named_buffers():
            owner_name, _, attr = name.rpartition(".")
            owners = [m.get_submodule(owner_name) for m in self.members]
            stacked = torch.stack([getattr(owner, attr) for owner in owners])
            for k, owner in enumerate(owners):
                setattr(owner, attr, stacked[k])  # updated in place by the packed forward
            self._buffers[name] = stacked
        self._params = [[named_k[n] for n in self._stacks] for named_k in named]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's outputs for the same inputs ``x``: ``[K, N, ...]``."""
        return self.members[0](x).unsqueeze(0)

    @property
    def stacks(self) -> list[torch.Tensor]:
        """The stacked parameters, ``[K, ...]`` each, in the members' parameter order (none for
        a model alone)."""
        return list(self._stacks.values())

    def params(self, k: int) -> list[torch.Tensor]:
        """Member ``k``'s parameters, in the order of :attr:`stacks` (a model alone: its own)."""
        return self._params[k]

    def share_grads(self) -> None:
        """After a backward pass: each member's parameters get their rows of the stacked grads."""
        for j, stack in enumerate(self._stacks.values()):
            grad = stack.grad
            for k in range(self.size):
                self._params[k][j].grad = None if grad is None else grad[k]
        self._shared = bool(self._stacks)

    def zero_grad(self) -> None:
        """Forget the stacked gradients, and the members' rows of them (a model alone: its
        parameters' gradients)."""
        for stack in self._stacks.values():
            stack.grad = None
        if self._shared or not self._stacks:
            for params in self._params:
                for param in params:
                    param.grad = None
            self._shared = False


class _Layered(Pack):
    """The shipped models, packed layer by layer (see the module's docstring)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        value, layout = self._forward(self.members[0], "", x, "shared")
        return self._stacked(value, layout)

    # Layouts of a packed activation: "shared" [N, ...] (the same for every member, before the
    # first layer with weights), "stacked" [K, N, ...] (linear layers), "grouped" [N, K*C, ...]
    # (convolutions and BatchNorm: member k's channels are k*C to (k+1)*C).

    def _stacked(self, value: torch.Tensor, layout: str) -> torch.Tensor:
        if layout == "shared":
            return value.expand(self.size, *value.shape)
        if layout == "grouped":
            n, channels = value.shape[:2]
            grouped = value.view(n, self.size, channels // self.size, *value.shape[2:])
            return grouped.transpose(0, 1)
        return value

    def _grouped(self, value: torch.Tensor, layout: str) -> torch.Tensor:
        if layout == "grouped":
            return value
        stacked = self._stacked(value, layout)
        return stacked.transpose(0, 1).flatten(1, 2)

    def _forward(
        self, module: nn.Module, name: str, value: torch.Tensor, layout: str
    ) -> tuple[torch.Tensor, str]:
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                value, layout = self._forward(child, prefix + child_name, value, layout)
            return value, layout
        if isinstance(module, MLP | ResNet):
            return self._forward(module.net, prefix + "net", value, layout)
        if isinstance(module, CNN):
            if module._unsqueeze:  # (the model's input: shared)
                value = value.unsqueeze(1)
            value, layout = self._forward(module.features, prefix + "features", value, layout)
            return self._forward(module.head, prefix + "head", value, layout)
        if isinstance(module, _BasicBlock):
            body, body_layout = self._forward(module.body, prefix + "body", value, layout)
            short, short_layout = self._forward(module.shortcut, prefix + "shortcut", value, layout)
            total = self._grouped(body, body_layout) + self._grouped(short, short_layout)
            return torch.relu(total), "grouped"
        if isinstance(module, _ELEMENTWISE):
            return module(value), layout
        if isinstance(module, _POOLS):
            return module(value if layout == "shared" else self._grouped(value, layout)), (
                "shared" if layout == "shared" else "grouped"
            )
        if isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) == (1, -1):
            if layout == "shared":
                return value.flatten(1), layout
            return self._stacked(value, layout).flatten(2), "stacked"
        if isinstance(module, nn.Linear):
            return self._linear(prefix, value, layout), "stacked"
        if isinstance(module, nn.Conv1d | nn.Conv2d) and module.padding_mode == "zeros":
            return self._conv(module, prefix, value, layout), "grouped"
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            return self._batch_norm(module, prefix, self._grouped(value, layout)), "grouped"
        raise _NotPackableError(f"{type(module).__name__} at {name or 'the top'}")

    def _linear(self, prefix: str, value: torch.Tensor, layout: str) -> torch.Tensor:
        weight, bias = self._stacks[prefix + "weight"], self._stacks.get(prefix + "bias")
        inputs = value if layout == "shared" else self._stacked(value, layout)
        return _PackedLinear.apply(inputs, weight, bias)

    def _conv(self, conv: nn.Conv1d | nn.Conv2d, prefix: str, value: torch.Tensor, layout: str):
        weight, bias = self._stacks[prefix + "weight"], self._stacks.get(prefix + "bias")
        if layout == "shared" and conv.groups != 1:
            raise _NotPackableError(f"a grouped convolution reading the input at {prefix}")
        groups = conv.groups if layout == "shared" else conv.groups * self.size
        value = value if layout == "shared" else self._grouped(value, layout)
        function = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
        return function(
            value,
            weight.flatten(0, 1),
            None if bias is None else bias.flatten(),
            conv.stride,
            conv.padding,
            conv.dilation,
            groups,
        )

    def _batch_norm(
        self, norm: nn.BatchNorm1d | nn.BatchNorm2d, prefix: str, value: torch.Tensor
    ) -> torch.Tensor:
        """As ``nn.BatchNorm``'s forward, over K × C channels: each member's own statistics."""
        weight, bias = self._stacks.get(prefix + "weight"), self._stacks.get(prefix + "bias")
        running_mean = self._buffers.get(prefix + "running_mean")
        running_var = self._buffers.get(prefix + "running_var")
        momentum = norm.momentum
        if norm.training and norm.track_running_stats:
            tracked = self._buffers[prefix + "num_batches_tracked"]
            tracked.add_(1)
            momentum = 1.0 / float(tracked[0]) if norm.momentum is None else norm.momentum
        return F.batch_norm(
            value,
            None if running_mean is None else running_mean.view(-1),
            None if running_var is None else running_var.view(-1),
            None if weight is None else weight.flatten(),
            None if bias is None else bias.flatten(),
            norm.training or running_mean is None,
            0.0 if momentum is None else momentum,
            norm.eps,
        )


class _PackedLinear(torch.autograd.Function):
    """K linear layers at once: ``[K, N, H] = x @ Wᵀ + b`` for inputs ``x`` of ``[N, F]`` (the
    same for every member) or ``[K, N, F]``, weights ``[K, H, F]``, bias ``[K, H]`` or None.

    Written out so that every tensor it makes is contiguous in its natural layout: the output
    ``[K, N, H]``, the input's gradient ``[K, N, F]`` and the weights' ``[K, H, F]``. Autograd's
    own backward of a batched matmul gives the weights' gradient transposed (copied into place
    at every step) or, with the output transposed instead, the next layer's elementwise ops
    mixed layouts: a ReLU's backward over a transposed output and a contiguous gradient ran 25×
    slower than over two contiguous ones (measured on a CPU core). Each member's arithmetic is
    the same matrix product as its ``nn.Linear`` alone.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        inputs = x.expand(len(weight), *x.shape) if x.dim() == 2 else x
        if bias is None:
            return torch.bmm(inputs, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight)
            if x.dim() == 2:
                grad_x = grad_x.sum(0)
        if ctx.needs_input_grad[1]:
            inputs = x.expand(len(weight), *x.shape) if x.dim() == 2 else x
            grad_weight = torch.bmm(grad.transpose(1, 2), inputs)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(1)
        return grad_x, grad_weight, grad_bias


class _Vmapped(Pack):
    """Any other model, through ``torch.func``: ``vmap`` of ``functional_call`` over the stacks."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__(members)
        template = self.members[0]

        def call(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, (params, buffers), (x,))

        self._call: Callable[..., torch.Tensor] = torch.func.vmap(call, in_dims=(0, 0, None))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self._stacks, self._buffers, x)


def pack_models(members: Sequence[nn.Module], stacked: bool = False) -> Pack:
    """The members as one :class:`Pack` (they must be copies of one model, same structure).

    The shipped models get their written-out packed forward, any other model ``vmap``; neither
    is checked here (:func:`check_pack`). One member is its model as it is, unless ``stacked``
    (a pack that shrank to one member keeps its stacks and its packed optimizer step).
    """
    if len(members) == 1 and not stacked:
        return Pack(members)
    if isinstance(members[0], MLP | CNN | ResNet):
        return _Layered(members)
    return _Vmapped(members)


def _flat_state(model: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return [*grads, *(b.float() for b in model.buffers())]


def check_pack(model: nn.Module, x: torch.Tensor, members: int = 2) -> str | None:
    """Why ``model`` cannot train in a pack, or None when it can.

    Packs ``members`` copies of ``model`` (each scaled differently, so a mix-up of members
    shows), runs one forward and backward pass on ``x`` in training mode and compares every
    member's outputs, gradients and buffers with the same copy run alone (float32, to a relative
    1e-4). ``model`` itself and the random number generator are left as they were.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            copies = [copy.deepcopy(model).train() for _ in range(members)]
            with torch.no_grad():
                for k, member in enumerate(copies):
                    for param in member.parameters():
                        param.mul_(1.0 + 0.25 * k)
            alone = [copy.deepcopy(member) for member in copies]
            pack = pack_models(copies)
            outputs = pack(x)
            outputs.float().square().mean(dim=tuple(range(1, outputs.dim()))).sum().backward()
            pack.share_grads()
            for k, member in enumerate(alone):
                expected = member(x)
                expected.float().square().mean().backward()
                if not _close([outputs[k]], [expected]):
                    return f"its packed outputs differ from member {k}'s alone"
                if not _close(_flat_state(copies[k]), _flat_state(member)):
                    return f"its packed gradients or buffers differ from member {k}'s alone"
    except _NotPackableError as error:
        return f"its layer {error} has no packed forward"
    except Exception as error:  # vmap or a layer refused: any error means "do not pack"
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"packing it failed ({type(error).__name__}: {message[:160]})"
    return None


def _close(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> bool:
    return len(actual) == len(expected) and all(
        a.shape == e.shape and torch.allclose(a.float(), e.float(), rtol=1e-4, atol=1e-6)
        for a, e in zip(actual, expected, strict=True)
    )
