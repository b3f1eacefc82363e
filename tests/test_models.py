"""Models: every conf/model file builds and maps each dataset shape to [batch, num_outputs]."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lrbatch.models import CNN, MLP, ResNet

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
# one example's shape for each dataset: mnist1d, digits/teacher-like, mnist, cifar10
SHAPES = [(40,), (64,), (1, 28, 28), (3, 32, 32)]


def _config(name: str):
    return OmegaConf.load(CONF / f"{name}.yaml")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("in_shape", SHAPES)
def test_model_configs_fit_every_dataset_shape(name: str, in_shape: tuple[int, ...]) -> None:
    model = instantiate(_config(name), in_shape=in_shape, num_outputs=10)
    assert model(torch.randn(5, *in_shape)).shape == (5, 10)


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet_config_fits_images(in_shape: tuple[int, ...]) -> None:
    model = instantiate(_config("resnet"), in_shape=in_shape, num_outputs=7)
    assert model(torch.randn(4, *in_shape)).shape == (4, 7)


def test_resnet_depth_follows_blocks_per_stage() -> None:
    def blocks(model: torch.nn.Module) -> int:
        return sum(type(m).__name__ == "_BasicBlock" for m in model.modules())

    assert blocks(ResNet((3, 32, 32), 10, width=8, blocks_per_stage=3)) == 9


def test_cnn_uses_conv1d_for_sequences_and_conv2d_for_images() -> None:
    def conv_kinds(model: torch.nn.Module) -> set[type]:
        return {type(m) for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}

    assert conv_kinds(CNN((40,), 10)) == {torch.nn.Conv1d}
    assert conv_kinds(CNN((2, 40), 10)) == {torch.nn.Conv1d}
    assert conv_kinds(CNN((3, 32, 32), 10)) == {torch.nn.Conv2d}
    assert CNN((2, 40), 3)(torch.randn(2, 2, 40)).shape == (2, 3)


def test_mlp_regression_outputs_and_activation() -> None:
    model = MLP((8,), 3, hidden=[16], activation="gelu")
    assert any(isinstance(m, torch.nn.GELU) for m in model.modules())
    assert model(torch.randn(2, 8)).shape == (2, 3)
    assert MLP((8,), 1, hidden=())(torch.randn(2, 8)).shape == (2, 1)  # linear model


def test_bad_model_settings_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"ResNet in_shape=\(40,\).*\(C, H, W\)"):
        ResNet((40,), 10)
    with pytest.raises(ValueError, match=r"activation='swish'.*'gelu', 'relu', 'tanh'"):
        MLP((8,), 2, activation="swish")
    with pytest.raises(ValueError, match=r"too small for 2 stages.*at least 4"):
        CNN((1, 3, 3), 10)
    with pytest.raises(ValueError, match="hidden=0"):
        MLP((8,), 2, hidden=[0])
