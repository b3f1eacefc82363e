"""The in-memory dataset container, and the coercion of what a user's ``_target_`` returns.

Public through ``lrbatch.data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

__all__ = ["TensorData", "load_tensors"]

_TASKS = ("classification", "regression")
_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val")


@dataclass(frozen=True)
class TensorData:
    """A dataset held entirely in memory as tensors (moved to the training device once).

    Attributes:
        x_train: Training inputs, float32 ``[N, *input_shape]``.
        y_train: Training targets: int64 class ids ``[N]`` (classification) or float32
            ``[N, num_outputs]`` (regression).
        x_val: Validation inputs, like ``x_train``.
        y_val: Validation targets, like ``y_train``.
        task: ``"classification"`` or ``"regression"``.
        name: Dataset name, for logs and reports.
        num_classes: Number of classes when the labels may not show them all (a small
            ``train_limit``); None infers ``max(label) + 1``. Unused for regression.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    name: str
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"TensorData task={self.task!r} is not accepted: use one of {_TASKS}")
        for split in ("train", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(
                    f"TensorData x_{split} has {len(x)} examples but y_{split} has {len(y)}: "
                    "they must match"
                )
        for split in ("train", "val"):
            if len(getattr(self, f"x_{split}")) == 0:
                raise ValueError(
                    f"TensorData x_{split} has no examples: lrbatch trains on the training "
                    "split and measures val_loss on the validation split; give each some"
                )
        if self.task == "classification":
            self._check_class_ids()
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise ValueError(
                f"TensorData x_train examples have shape {tuple(self.x_train.shape[1:])} but "
                f"x_val examples {tuple(self.x_val.shape[1:])}: they must match"
            )

    def _check_class_ids(self) -> None:
        for split in ("train", "val"):
            y = getattr(self, f"y_{split}")
            if y.dim() != 1 or y.is_floating_point():
                raise ValueError(
                    f"TensorData y_{split} has shape {tuple(y.shape)} and dtype {y.dtype}: "
                    "classification targets are integer class ids, one per example, shape [N]"
                )
            low, high = int(y.min()), int(y.max())
            limit = f" (num_classes={self.num_classes})" if self.num_classes is not None else ""
            if low < 0 or (self.num_classes is not None and high >= self.num_classes):
                raise ValueError(
                    f"TensorData y_{split} holds class id {low if low < 0 else high}: class "
                    f"ids run from 0 to the number of classes − 1{limit}"
                )

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(40,)`` or ``(3, 32, 32)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Classes for classification, output dimensions for regression."""
        if self.task == "regression":
            return int(self.y_train.shape[1])
        if self.num_classes is not None:
            return self.num_classes
        return int(max(self.y_train.max(), self.y_val.max())) + 1

    def to(self, device: torch.device | str) -> TensorData:
        """Return a copy with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


def _as_tensor(value: Any, setting: str) -> torch.Tensor:
    if getattr(getattr(value, "dtype", None), "kind", None) == "O":  # numpy's object arrays
        raise TypeError(
            f"{setting} is an array of dtype object (mixed types, or rows of different "
            "lengths), which cannot be made a tensor: give numbers, e.g. "
            "np.asarray(x, dtype=np.float32)"
        )
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{setting} of type {type(value).__name__} cannot be made a tensor: "
            "give a torch.Tensor or a numpy array of numbers"
        ) from err


def _class_ids(y: torch.Tensor) -> torch.Tensor:
    """Integer targets as class ids ``[N]`` (a column ``[N, 1]`` is one per example too)."""
    return (y.squeeze(1) if y.dim() == 2 and y.shape[1] == 1 else y).long()


def _from_splits(splits: Any, name: str) -> TensorData:
    """Build a TensorData from four arrays, inferring the task from the dtype of y."""
    x_train, y_train, x_val, y_val = (
        _as_tensor(v, k) for k, v in zip(_SPLIT_KEYS, splits, strict=True)
    )
    if y_train.is_floating_point() != y_val.is_floating_point():
        raise ValueError(
            f"y_train has dtype {y_train.dtype} but y_val {y_val.dtype}: both must be integer "
            "(classification) or both floating point (regression)"
        )
    if y_train.is_floating_point():
        task = "regression"
        y_train, y_val = (y.float().reshape(len(y), -1) for y in (y_train, y_val))
    else:
        task = "classification"
        y_train, y_val = _class_ids(y_train), _class_ids(y_val)
    return TensorData(x_train.float(), y_train, x_val.float(), y_val, task, name)


def _from_datamodule(datamodule: Any) -> TensorData:
    """Concatenate every ``(x, y)`` batch of a LightningDataModule's train and val loaders."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    splits: list[torch.Tensor] = []
    for split, loader in (
        ("train", datamodule.train_dataloader()),
        ("val", datamodule.val_dataloader()),
    ):
        xs, ys = [], []
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(
                    f"{type(datamodule).__name__}.{split}_dataloader() yielded a "
                    f"{type(batch).__name__}: lrbatch accepts only (x, y) batches"
                )
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise ValueError(f"{type(datamodule).__name__}.{split}_dataloader() yielded no batches")
        splits += [torch.cat(xs), torch.cat(ys)]
    return _from_splits(splits, type(datamodule).__name__)


def load_tensors(obj: Any) -> TensorData:
    """Coerce what a dataset ``_target_`` returned into a ``TensorData``.

    Accepted: a ``TensorData`` (returned as is); a ``lightning.LightningDataModule`` (its
    ``prepare_data()`` and ``setup("fit")`` are called, then every ``(x, y)`` batch of
    ``train_dataloader()`` and ``val_dataloader()`` is concatenated); a tuple or list
    ``(x_train, y_train, x_val, y_val)``; or a mapping with those four keys. Arrays may be
    tensors or numpy arrays. Inputs become float32. Integer targets mean classification (int64
    class ids); floating-point targets mean regression (float32, 1-D targets become ``[N, 1]``).

    Args:
        obj: The object to coerce.

    Returns:
        The data as tensors.

    Raises:
        TypeError: If ``obj`` is none of the accepted kinds or holds something not array-like.
        ValueError: If the train and val targets disagree on the task or lengths do not match.
    """
    if isinstance(obj, TensorData):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 4:
        return _from_splits(obj, "tensors")
    if isinstance(obj, Mapping) and set(_SPLIT_KEYS) <= set(obj):
        return _from_splits([obj[key] for key in _SPLIT_KEYS], "tensors")
    from lightning import LightningDataModule  # slow import: only here

    if isinstance(obj, LightningDataModule):
        return _from_datamodule(obj)
    received = f"{type(obj).__name__}"
    if isinstance(obj, (tuple, list)):
        received += f" of length {len(obj)}"
    elif isinstance(obj, Mapping):
        received += f" with keys {sorted(map(str, obj))}"
    raise TypeError(
        f"dataset _target_ returned a {received}: accepted are a TensorData, a "
        "lightning.LightningDataModule, a tuple/list (x_train, y_train, x_val, y_val), or a "
        f"dict with keys {list(_SPLIT_KEYS)}"
    )
