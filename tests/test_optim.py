"""Sign-based optimizers: they descend, Lion matches its published update, bad settings fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lrbatch.optim import Lion, SignSGD

CONF = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
NAMES = sorted(path.stem for path in CONF.glob("*.yaml"))


def _quadratic_loss(param: torch.Tensor) -> torch.Tensor:
    scales = torch.linspace(0.5, 4.0, param.numel())
    return 0.5 * (scales * (param - 1.0) ** 2).sum()


def _descend(make, steps: int = 200) -> tuple[float, float]:
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(16) * 3)
    optimizer = make([param])
    start = float(_quadratic_loss(param.detach()))
    for _ in range(steps):
        optimizer.zero_grad()
        _quadratic_loss(param).backward()
        optimizer.step()
    return start, float(_quadratic_loss(param.detach()))


def test_every_optimizer_config_is_partial_without_lr() -> None:
    assert {"adam", "adamw", "lion", "momentum", "rmsprop", "sgd", "signsgd"} <= set(NAMES)
    for name in NAMES:
        config = OmegaConf.load(CONF / f"{name}.yaml")
        assert config._partial_ is True and "lr" not in config, name


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_configs_instantiate_and_descend(name: str) -> None:
    make = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    start, end = _descend(lambda params: make(params, lr=0.01))
    assert end < 0.5 * start


def test_momentum_config_turns_nesterov_on() -> None:
    config = OmegaConf.load(CONF / "momentum.yaml")
    config.nesterov = True
    optimizer = instantiate(config)([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert optimizer.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize(
    "make",
    [
        lambda p: Lion(p, lr=0.05),
        lambda p: Lion(p, lr=0.05, weight_decay=0.1),
        lambda p: SignSGD(p, lr=0.05),
        lambda p: SignSGD(p, lr=0.05, momentum=0.9),
    ],
)
def test_sign_optimizers_reduce_a_quadratic(make) -> None:
    # Lion's slow momentum (beta2 = 0.99) overshoots for a few hundred steps before settling
    start, end = _descend(make, steps=500)
    assert end < 0.01 * start


def test_lion_step_matches_the_published_update() -> None:
    lr, beta1, beta2, weight_decay = 0.1, 0.9, 0.99, 0.5
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = Lion([param], lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)
    grads = [torch.tensor([0.5, 0.0, -4.0]), torch.tensor([-1.0, 2.0, 0.1])]
    expected, momentum = param.detach().clone(), torch.zeros(3)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        update = torch.sign(beta1 * momentum + (1 - beta1) * grad)
        expected = expected * (1 - lr * weight_decay) - lr * update
        momentum = beta2 * momentum + (1 - beta2) * grad
        torch.testing.assert_close(param.detach(), expected)
    # by hand, first coordinate: step 1: 1 * (1 - 0.05) - 0.1 * sign(0.1 * 0.5) = 0.85, m = 0.005;
    # step 2: 0.85 * 0.95 - 0.1 * sign(0.9 * 0.005 + 0.1 * -1) = 0.8075 + 0.1 = 0.9075
    assert float(param.detach()[0]) == pytest.approx(0.9075)


def test_signsgd_moves_every_coordinate_by_lr() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = SignSGD([param], lr=0.25)
    param.grad = torch.tensor([1e-6, -5.0, 0.0])
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([0.75, -1.75, 3.0]))


def test_step_returns_the_closure_loss() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = Lion([param], lr=0.1)

    def closure() -> float:
        optimizer.zero_grad()
        loss = _quadratic_loss(param)
        loss.backward()
        return float(loss.detach())

    assert optimizer.step(closure) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: Lion(p, lr=0.0), r"lr=0\.0 .*> 0"),
        (lambda p: Lion(p, lr=-1e-3), r"lr=-0\.001 .*> 0"),
        (lambda p: Lion(p, betas=(0.9, 1.0)), r"betas\[1\]=1\.0 .*\[0, 1\)"),
        (lambda p: Lion(p, weight_decay=-0.1), r"weight_decay=-0\.1"),
        (lambda p: SignSGD(p, lr=0.0), r"lr=0\.0 .*> 0"),
        (lambda p: SignSGD(p, momentum=1.0), r"momentum=1\.0 .*\[0, 1\)"),
    ],
)
def test_bad_settings_raise_clear_errors(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make([torch.nn.Parameter(torch.zeros(1))])
