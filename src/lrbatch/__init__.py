"""lrbatch: how the best learning rate changes with the batch size, measured.

The package by stage (docs/development.md): :mod:`lrbatch.science` (the numbers: rules, laws,
optima, the edge, the verdict, predictions; no torch), :mod:`lrbatch.search` (the plan, the
sampler, the study), :mod:`lrbatch.training` (a trial or a pack of them),
:mod:`lrbatch.workers` (processes that train trials for a study), :mod:`lrbatch.report` (the
answer), and at the root the command line, the config and what configs name as ``_target_``
(:mod:`lrbatch.data`, :mod:`lrbatch.models`, :mod:`lrbatch.optim`).

The names below are lrbatch's Python interface; each loads its module when first used, so
``import lrbatch`` stays light.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

try:
    __version__ = version("lrbatch")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from lrbatch.config import ConfigError, load_config
    from lrbatch.data.tensors import TensorData
    from lrbatch.report.report import build_report
    from lrbatch.search.plan import SweepPlan
    from lrbatch.search.sampler import LRBatchSampler, stop_when_plan_finished
    from lrbatch.search.study_io import trial_noise
    from lrbatch.training.gradient_noise import measure
    from lrbatch.training.loop import train
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "ConfigError",
    "LRBatchSampler",
    "SweepPlan",
    "TensorData",
    "__version__",
    "build_report",
    "load_config",
    "measure",
    "stop_when_plan_finished",
    "train",
    "trial_noise",
]
