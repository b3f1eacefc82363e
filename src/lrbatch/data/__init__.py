"""Datasets: every builder returns a ``TensorData`` of in-memory tensors. Configs name the
builders as ``_target_: lrbatch.data.NAME``, which this package keeps importable.
"""

from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

if TYPE_CHECKING:
    from lrbatch.data.datasets import (
        cache_dir,
        cifar10,
        digits,
        fashion_mnist,
        mnist,
        mnist1d,
        teacher,
        teacher_regression,
    )
    from lrbatch.data.tensors import TensorData, load_tensors
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "TensorData",
    "cache_dir",
    "cifar10",
    "digits",
    "fashion_mnist",
    "load_tensors",
    "mnist",
    "mnist1d",
    "teacher",
    "teacher_regression",
]
