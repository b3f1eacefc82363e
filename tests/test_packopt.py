"""A pack's members step at once (lrbatch.training.packed_step): each as its own optimizer would."""

import copy

import pytest
import torch

from lrbatch.optim import Lion, SignSGD
from lrbatch.training.packed_step import packed_step

LRS = [0.003, 0.02, 0.1, 0.7]  # one per member, per step (a schedule multiplies them)

# Every option the packed step writes out, each where it changes the arithmetic.
CASES = {
    "sgd": (torch.optim.SGD, {}),
    "sgd momentum nesterov decay": (
        torch.optim.SGD,
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    "sgd dampening maximize": (
        torch.optim.SGD,
        {"momentum": 0.8, "dampening": 0.3, "maximize": True},
    ),
    "adam": (torch.optim.Adam, {}),
    "adam amsgrad decay": (torch.optim.Adam, {"amsgrad": True, "weight_decay": 0.01}),
    "adam maximize betas": (torch.optim.Adam, {"maximize": True, "betas": (0.8, 0.95)}),
    "adamw": (torch.optim.AdamW, {"weight_decay": 0.1}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "rmsprop centered momentum decay": (
        torch.optim.RMSprop,
        {"centered": True, "momentum": 0.9, "weight_decay": 0.01},
    ),
    "lion": (Lion, {"weight_decay": 0.1}),
    "signsgd": (SignSGD, {}),
    "signum": (SignSGD, {"momentum": 0.9}),
}


def members(kind, options):
    """K members' parameters (rows of stacks) with their own optimizers, and the stacks."""
    torch.manual_seed(0)
    k = len(LRS)
    shapes = [(6, 5), (6,), (3, 2, 2)]
    stacks = [torch.randn(k, *shape, dtype=torch.float64).float() for shape in shapes]
    params = [[torch.nn.Parameter(stack[m].clone()) for stack in stacks] for m in range(k)]
    for m in range(k):  # the members' parameters are views of the stacks' rows
        for param, stack in zip(params[m], stacks, strict=True):
            param.data = stack.data[m]
    optimizers = [kind(own, lr=LRS[m], **options) for m, own in enumerate(params)]
    return stacks, params, optimizers


def grads(stacks, step):
    torch.manual_seed(100 + step)
    return [torch.randn_like(stack) * (1 + step % 3) for stack in stacks]


@pytest.mark.parametrize("case", CASES)
def test_packed_steps_give_each_member_its_own_optimizers_numbers(case: str) -> None:
    kind, options = CASES[case]
    stacks, params, optimizers = members(kind, options)
    alone = [[p.detach().clone() for p in own] for own in params]  # each member by itself
    alone_optimizers = [
        kind([torch.nn.Parameter(p) for p in own], lr=LRS[m], **options)
        for m, own in enumerate(alone)
    ]
    leaves = [o.param_groups[0]["params"] for o in alone_optimizers]
    stepper = packed_step(optimizers, stacks, params)
    assert stepper is not None
    for step in range(1, 7):
        factor = 1.0 if step < 4 else 0.5  # a schedule's factor changes the rates
        for stack, grad in zip(stacks, grads(stacks, step), strict=True):
            stack.grad = grad
        for m, own in enumerate(leaves):
            for leaf, grad in zip(own, grads(stacks, step), strict=True):
                leaf.grad = grad[m].clone()
            alone_optimizers[m].param_groups[0]["lr"] = LRS[m] * factor
            alone_optimizers[m].step()
        stepper.step([lr * factor for lr in LRS])
        for m in range(len(LRS)):
            for stack, leaf in zip(stacks, leaves[m], strict=True):
                torch.testing.assert_close(stack[m], leaf.detach(), rtol=1e-6, atol=1e-7)
    starts = members(kind, {})[0]
    moved = [float((s - start).abs().max()) for s, start in zip(stacks, starts, strict=True)]
    assert min(moved) > 1e-4  # the steps did move every stack


@pytest.mark.parametrize("case", CASES)
def test_a_model_alone_steps_as_its_own_optimizer_would(case: str) -> None:
    """One optimizer and no stacks: the same step over the model's own parameters (a scalar
    parameter included), each number its optimizer's."""
    kind, options = CASES[case]
    torch.manual_seed(0)
    own = [torch.nn.Parameter(torch.randn(shape)) for shape in [(6, 5), (6,), ()]]
    leaves = [torch.nn.Parameter(p.detach().clone()) for p in own]
    stepper = packed_step([kind(own, lr=LRS[1], **options)], [], [own])
    assert stepper is not None and not stepper.stacked
    reference = kind(leaves, lr=LRS[1], **options)
    for step in range(1, 7):
        factor = 1.0 if step < 4 else 0.5
        for param, leaf, grad in zip(own, leaves, grads(own, step), strict=True):
            param.grad, leaf.grad = grad, grad.clone()
        reference.param_groups[0]["lr"] = LRS[1] * factor
        reference.step()
        stepper.step([LRS[1] * factor])
        for param, leaf in zip(own, leaves, strict=True):
            torch.testing.assert_close(param.detach(), leaf.detach(), rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    starts = [torch.randn(shape) for shape in [(6, 5), (6,), ()]]
    assert min(float((p.detach() - s).abs().max()) for p, s in zip(own, starts, strict=True)) > 1e-4


def test_a_smaller_pack_keeps_its_members_optimizer_state() -> None:
    kind, options = CASES["adam amsgrad decay"]
    stacks, params, optimizers = members(kind, options)
    stepper = packed_step(optimizers, stacks, params)
    assert stepper is not None
    for step in range(1, 4):
        for stack, grad in zip(stacks, grads(stacks, step), strict=True):
            stack.grad = grad
        stepper.step(LRS)
    whole = copy.deepcopy(stepper)  # goes on with all four members
    # members 0 and 2 go on as a pack of their own (1 and 3 left), over new stacks
    kept_stacks = [stack.detach()[[0, 2]].clone() for stack in stacks]
    kept = stepper.keep([0, 2], kept_stacks)
    last = grads(stacks, 4)
    for stack, kept_stack, grad in zip(whole.stacks, kept_stacks, last, strict=True):
        stack.grad, kept_stack.grad = grad, grad[[0, 2]].clone()
    whole.step(LRS)
    kept.step([LRS[0], LRS[2]])
    assert kept.steps == whole.steps == 4
    for stack, kept_stack in zip(whole.stacks, kept_stacks, strict=True):
        torch.testing.assert_close(kept_stack, stack.detach()[[0, 2]], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(kept_stack, stack.detach()[[1, 3]])


class _OwnSGD(torch.optim.SGD):
    """A user's subclass: its step may do anything."""


@pytest.mark.parametrize(
    "make",
    [
        lambda ps, lr: torch.optim.Adagrad(ps, lr=lr),  # not written out
        lambda ps, lr: _OwnSGD(ps, lr=lr),  # a subclass
        lambda ps, lr: torch.optim.Adam(ps, lr=lr, capturable=True),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, differentiable=True),
        lambda ps, lr: torch.optim.SGD([{"params": ps[:1]}, {"params": ps[1:]}], lr=lr),
    ],
    ids=["adagrad", "subclass", "capturable", "differentiable", "two groups"],
)
def test_optimizers_it_does_not_write_out_step_one_at_a_time(make) -> None:
    stacks, params, _ = members(torch.optim.SGD, {})
    optimizers = [make(own, lr) for own, lr in zip(params, LRS, strict=True)]
    assert packed_step(optimizers, stacks, params) is None


def test_members_with_different_settings_or_foreign_parameters_are_not_packed() -> None:
    stacks, params, _ = members(torch.optim.SGD, {})
    mixed = [
        torch.optim.SGD(own, lr=0.1, momentum=0.9 if m else 0.5) for m, own in enumerate(params)
    ]
    assert packed_step(mixed, stacks, params) is None
    others = [
        torch.optim.SGD([torch.nn.Parameter(p.clone()) for p in own], lr=0.1) for own in params
    ]
    assert packed_step(others, stacks, params) is None
    half = [s.half() for s in stacks]
    assert packed_step([torch.optim.SGD(own, lr=0.1) for own in params], half, params) is None
    same = [torch.optim.SGD(own, lr=0.1, momentum=0.9) for own in params]
    assert packed_step(same, stacks, params) is not None
