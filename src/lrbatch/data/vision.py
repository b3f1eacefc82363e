"""Readers for the files torchvision writes for MNIST, Fashion-MNIST and CIFAR-10.

Reading needs only numpy and torch; torchvision is imported only to download missing files,
and it writes exactly the layout read here:

- ``{data_dir}/MNIST/raw/`` and ``{data_dir}/FashionMNIST/raw/``: idx files
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte``, plain or ``.gz``;
- ``{data_dir}/cifar-10-batches-py/``: pickles ``data_batch_1`` to ``data_batch_5`` and
  ``test_batch``, each a dict with ``data`` (uint8 ``[N, 3072]``) and ``labels``.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrbatch.data.tensors import TensorData

__all__ = ["load"]

# idx type code 0x08: unsigned bytes; the magic is 0x00 0x00 <type code> <number of dims>
_IDX_UBYTE = 0x08

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images [N, C, H, W], int64 labels [N]


def _read_bytes(path: Path) -> bytearray:
    """Read a plain or gzipped file into a writable buffer that torch can share."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        return bytearray(file.read())


def _read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read an idx file of unsigned bytes (LeCun's MNIST format) with ``ndim`` dimensions."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise ValueError(
            f"{path} is not an idx file of {ndim}-D unsigned bytes: its magic number is "
            f"{bytes(raw[:4]).hex()}, expected 000008{ndim:02x}"
        )
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path} declares shape {shape} ({int(np.prod(shape))} bytes) but holds "
            f"{len(raw) - header} bytes of data"
        )
    return torch.frombuffer(raw, dtype=torch.uint8, offset=header).reshape(shape)


def _read_idx_pair(paths: list[Path]) -> Split:
    images, labels = _read_idx(paths[0], ndim=3), _read_idx(paths[1], ndim=1)
    if len(images) != len(labels):
        raise ValueError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels"
        )
    return images.unsqueeze(1), labels.long()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts of numpy arrays, lists, bytes and strings, never arbitrary code."""

    _ALLOWED = frozenset(
        {
            ("_codecs", "encode"),
            ("numpy", "dtype"),
            ("numpy", "ndarray"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists and strings"
            )
        return super().find_class(module, name)


def _read_cifar_batches(paths: list[Path]) -> Split:
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as file:
            # latin1 decodes the Python 2 strings of the original files, as torchvision does
            batch = _ArrayUnpickler(file, encoding="latin1").load()
        batch = {
            key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()
        }
        if "data" not in batch or "labels" not in batch:
            raise ValueError(
                f"{path} has keys {sorted(batch)}: a CIFAR-10 batch needs data and labels"
            )
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch["labels"]):
            raise ValueError(
                f"{path} holds data of shape {data.shape} and {len(batch['labels'])} labels: "
                "expected [N, 3072] and N labels"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch["labels"], dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


@dataclass(frozen=True)
class _Layout:
    """Where torchvision puts one dataset under ``data_dir`` and how to read it."""

    folder: str
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    reader: Callable[[list[Path]], Split]
    torchvision_class: str
    gzip_accepted: bool


_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_VAL = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_LAYOUTS = {
    "mnist": _Layout("MNIST/raw", _IDX_TRAIN, _IDX_VAL, _read_idx_pair, "MNIST", True),
    "fashion_mnist": _Layout(
        "FashionMNIST/raw", _IDX_TRAIN, _IDX_VAL, _read_idx_pair, "FashionMNIST", True
    ),
    "cifar10": _Layout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        _read_cifar_batches,
        "CIFAR10",
        False,
    ),
}


def _find(layout: _Layout, data_dir: str) -> tuple[list[Path], list[Path]]:
    """Return the paths found for every expected file, and the expected paths not found."""
    found, missing = [], []
    for name in layout.train_files + layout.val_files:
        path = Path(data_dir) / layout.folder / name
        gz_path = path.with_name(name + ".gz")
        if path.is_file():
            found.append(path)
        elif layout.gzip_accepted and gz_path.is_file():
            found.append(gz_path)
        else:
            missing.append(path)
    return found, missing


def _download(layout: _Layout, data_dir: str, missing: list[Path]) -> None:
    try:
        import torchvision  # optional: lrbatch[vision]
    except ImportError as err:
        raise ImportError(
            f"{', '.join(map(str, missing))} not found, and downloading needs torchvision: "
            "pip install 'lrbatch[vision]', or place the files there yourself"
        ) from err
    # one call fetches both splits: torchvision downloads the whole archive
    getattr(torchvision.datasets, layout.torchvision_class)(
        root=data_dir, train=True, download=True
    )


def _read(name: str, data_dir: str, download: bool) -> tuple[Split, Split]:
    """Read the official train and test splits: uint8 images and int64 labels."""
    layout = _LAYOUTS[name]
    found, missing = _find(layout, data_dir)
    if missing and download:
        _download(layout, data_dir, missing)
        found, missing = _find(layout, data_dir)
    if missing:
        hint = "" if download else " (download=false: set download=true, or place them there)"
        raise FileNotFoundError(f"{name}: expected {', '.join(map(str, missing))}{hint}")
    num_train = len(layout.train_files)
    return layout.reader(found[:num_train]), layout.reader(found[num_train:])


def load(
    name: str, data_dir: str, download: bool, train_limit: int | None, val_limit: int | None
) -> TensorData:
    """Read an image dataset, downloading if allowed, and normalise it per channel.

    Pixels are scaled to [0, 1], then each channel is normalised by the mean and std of the
    full official training split (so a limit does not change the scale).

    Args:
        name: ``mnist``, ``fashion_mnist`` or ``cifar10``.
        data_dir: Folder holding torchvision's layout for that dataset.
        download: Download through torchvision when files are missing.
        train_limit: Keep only the first this many training images (None: all).
        val_limit: Keep only the first this many validation (official test) images (None: all).

    Returns:
        Classification data with float32 images ``[N, C, H, W]`` and 10 classes.

    Raises:
        FileNotFoundError: If files are missing and ``download`` is False (or the download
            did not produce them).
        ImportError: If files are missing, ``download`` is True and torchvision is missing.
        ValueError: If a file is malformed or a limit is below 1.
    """
    for setting, limit in (("train_limit", train_limit), ("val_limit", val_limit)):
        if limit is not None and limit < 1:
            raise ValueError(
                f"dataset {setting}={limit!r} is not accepted: use an integer >= 1, or null for all"
            )
    (x_train, y_train), (x_val, y_val) = _read(name, data_dir, download)
    stats = [torch.std_mean(x_train[:, c].float() / 255.0) for c in range(x_train.shape[1])]
    std = torch.tensor([s for s, _ in stats]).view(1, -1, 1, 1)
    mean = torch.tensor([m for _, m in stats]).view(1, -1, 1, 1)
    return TensorData(
        x_train=x_train[:train_limit].float().div_(255.0).sub_(mean).div_(std),
        y_train=y_train[:train_limit].clone(),
        x_val=x_val[:val_limit].float().div_(255.0).sub_(mean).div_(std),
        y_val=y_val[:val_limit].clone(),
        task="classification",
        name=name,
        num_classes=10,
    )
