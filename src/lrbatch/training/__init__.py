"""Training: one trial or a pack of learning rates at one (batch, seed), its parts (micro-
batches, schedule, device, data, model, evaluation), packed models and their optimizer
steps, and the torch side of the gradient noise scale.
"""

from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

if TYPE_CHECKING:
    from lrbatch.training.gradient_noise import TrialNoise, measure
    from lrbatch.training.loop import train, train_pack
    from lrbatch.training.noise_scale import (
        base_batch,
        noise_scale_json,
        optimizer_name,
        plain_sgd,
        render_noise_scale,
        run_noise_scale,
    )
    from lrbatch.training.trial import (
        TrialResult,
        build_model,
        load_data,
        make_fabric,
        training_length,
    )
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "TrialNoise",
    "TrialResult",
    "base_batch",
    "build_model",
    "load_data",
    "make_fabric",
    "measure",
    "noise_scale_json",
    "optimizer_name",
    "plain_sgd",
    "render_noise_scale",
    "run_noise_scale",
    "train",
    "train_pack",
    "training_length",
]
