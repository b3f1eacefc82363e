"""In-memory datasets: every builder returns a ``TensorData`` of tensors.

The datasets in a learning-rate × batch-size sweep are small enough to hold in memory, so a
trainer moves them to its device once and slices batches there, with no loader in the loop.
Each builder below is the ``_target_`` of a file in ``conf/dataset/``; ``load_tensors`` turns
what a user's own ``_target_`` returns into a ``TensorData``.

The image datasets (``mnist``, ``fashion_mnist``, ``cifar10``) are read from the on-disk layout
torchvision writes, by ``lrbatch.data.vision``; torchvision is needed only to download them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrbatch.data import vision as _vision
from lrbatch.data.tensors import TensorData, load_tensors

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


def _check_fraction(setting: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"dataset {setting}={value!r} is not accepted: it must be in (0, 1)")


def _check_positive(setting: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"dataset {setting}={value!r} is not accepted: it must be an integer >= 1")


def _classification(
    x_train: Any, y_train: Any, x_val: Any, y_val: Any, name: str, num_classes: int
) -> TensorData:
    """Build a classification TensorData from arrays, copying them (float32 x, int64 y)."""
    return TensorData(
        x_train=torch.tensor(x_train, dtype=torch.float32),
        y_train=torch.tensor(y_train, dtype=torch.int64),
        x_val=torch.tensor(x_val, dtype=torch.float32),
        y_val=torch.tensor(y_val, dtype=torch.int64),
        task="classification",
        name=name,
        num_classes=num_classes,
    )


_CACHE_FORMAT = "v1"  # change when what _generate_mnist1d returns changes


def cache_dir() -> Path:
    """Where generated datasets are kept between runs: ``$LRBATCH_CACHE``, else
    ``$XDG_CACHE_HOME/lrbatch``, else ``~/.cache/lrbatch``."""
    if os.environ.get("LRBATCH_CACHE"):
        return Path(os.environ["LRBATCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lrbatch"


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(num_samples: int, train_split: float, seed: int) -> tuple[np.ndarray, ...]:
    """MNIST-1D's arrays, generated once per machine and argument set (generating 5000
    examples takes a second or two, which every worker process would otherwise spend) and kept
    in :func:`cache_dir`; the arrays are read-only."""
    keys = ("x", "y", "x_test", "y_test")
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:  # (no version to key a cache file on)
        version = None
    name = f"mnist1d-{version}-{_CACHE_FORMAT}-n{num_samples}-split{train_split}-seed{seed}.npz"
    path = cache_dir() / name
    try:
        if version is None:
            raise FileNotFoundError(path)
        with np.load(path) as saved:
            arrays = tuple(saved[key] for key in keys)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, or damaged
        arrays = _generate_mnist1d(num_samples, train_split, seed, keys)
        if version is not None:
            _save_whole(path, dict(zip(keys, arrays, strict=True)))
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _save_whole(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` under another name, then rename: a reader never sees part of a file.
    An unwritable cache only costs the time to generate them again."""
    part: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as f:
            part = Path(f.name)
            np.savez(f, **arrays)  # type: ignore[arg-type]  # (numpy's stubs: allow_pickle)
        part.chmod(0o644)  # (a temporary file is private; a shared cache is not)
        os.replace(part, path)
    except OSError:
        if part is not None:
            part.unlink(missing_ok=True)


def _generate_mnist1d(
    num_samples: int, train_split: float, seed: int, keys: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
    import mnist1d.data  # only this builder needs it

    args = mnist1d.data.get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    # make_dataset reseeds the global `random` and numpy generators: restore them afterwards
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        generated = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return tuple(np.asarray(generated[key]) for key in keys)


def mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> TensorData:
    """MNIST-1D (Greydanus 2020, arXiv:2011.14439): 10 classes of 40-sample 1-D signals.

    Generated, not downloaded (about 1.5 s for 5000 samples on one core), once per machine and
    argument set: later calls, in any process, read the arrays back from :func:`cache_dir`.

    Args:
        num_samples: Examples in total, train and validation together; rounded down to a
            multiple of the 10 classes.
        train_split: Fraction of the examples used for training, in (0, 1).
        seed: Seed of the generator.

    Returns:
        Classification data with inputs ``[N, 40]`` (zero mean, unit std) and 10 classes.

    Raises:
        ValueError: If ``num_samples`` is below 10 or ``train_split`` is outside (0, 1).
    """
    if num_samples < 10:
        raise ValueError(f"dataset num_samples={num_samples!r} is not accepted: it must be >= 10")
    _check_fraction("train_split", train_split)
    x_train, y_train, x_val, y_val = _mnist1d_arrays(num_samples, train_split, seed)
    return _classification(x_train, y_train, x_val, y_val, "mnist1d", 10)


def digits(val_fraction: float = 0.2, seed: int = 0) -> TensorData:
    """scikit-learn's 8x8 handwritten digits (1797 examples, bundled with scikit-learn).

    Args:
        val_fraction: Fraction of the examples held out for validation, in (0, 1); the split is
            stratified by class.
        seed: Seed of the split.

    Returns:
        Classification data with inputs ``[N, 64]`` scaled to [0, 1] and 10 classes.

    Raises:
        ValueError: If ``val_fraction`` is outside (0, 1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_fraction("val_fraction", val_fraction)
    bunch = load_digits()
    x = bunch.data / 16.0  # pixel intensities are 0..16
    x_train, x_val, y_train, y_val = train_test_split(
        x, bunch.target, test_size=val_fraction, stratify=bunch.target, random_state=seed
    )
    return _classification(x_train, y_train, x_val, y_val, "digits", 10)


def teacher(
    num_samples: int = 4096,
    input_dim: int = 32,
    num_classes: int = 10,
    hidden: int = 64,
    noise: float = 0.1,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TensorData:
    """Synthetic teacher-student classification.

    Inputs are standard Gaussian; a fixed random 2-layer teacher ``argmax(W2 tanh(W1 x))``
    (weights drawn with ``seed``) gives each its label, and then each label, with probability
    ``noise``, is replaced by a class drawn uniformly from all ``num_classes`` (which may be
    the same class). The label noise sets the floor under the validation loss.

    Args:
        num_samples: Examples in total, train and validation together.
        input_dim: Features per example.
        num_classes: Number of classes (>= 2).
        hidden: Hidden width of the teacher.
        noise: Probability, per example, that its label is resampled uniformly, in [0, 1].
        val_fraction: Fraction of the examples held out for validation, in (0, 1).
        seed: Seed of the inputs, the teacher and the noise.

    Returns:
        Classification data with inputs ``[N, input_dim]`` and ``num_classes`` classes.

    Raises:
        ValueError: If a size is below 1 (``num_classes`` below 2), ``noise`` is outside
            [0, 1] or ``val_fraction`` outside (0, 1).
    """
    if num_classes < 2:
        raise ValueError(f"dataset num_classes={num_classes!r} is not accepted: it must be >= 2")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(
            f"dataset noise={noise!r} is not accepted: it is the probability that a label is "
            "resampled uniformly, in [0, 1]"
        )
    gen, x, outputs = _teacher_outputs(
        num_samples, input_dim, num_classes, hidden, val_fraction, seed
    )
    y = torch.argmax(outputs, dim=1)
    resampled = torch.rand(num_samples, generator=gen) < noise
    y = torch.where(resampled, torch.randint(num_classes, (num_samples,), generator=gen), y)
    num_val = max(1, round(num_samples * val_fraction))
    return TensorData(
        x[num_val:], y[num_val:], x[:num_val], y[:num_val], "classification", "teacher", num_classes
    )


def teacher_regression(
    num_samples: int = 40960,
    input_dim: int = 32,
    num_outputs: int = 10,
    hidden: int = 64,
    noise: float = 0.0,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TensorData:
    """Synthetic teacher-student regression: the targets are the teacher's outputs themselves.

    The inputs and the teacher are :func:`teacher`'s (the same ``seed`` draws the same inputs and
    weights); each target is ``W2 tanh(W1 x)``, plus Gaussian noise of standard deviation
    ``noise`` on every output. Without noise the per-example gradients shrink with the residual,
    as the mean gradient does, so the gradient noise scale B_simple = tr(Σ)/|G|² stays moderate
    (tens to a few hundred with an MLP student) far longer than on a classification task, where
    it climbs into the thousands once the easy examples are fitted; target noise adds to tr(Σ)
    what no fit removes, and raises B_simple as the residual falls to it.

    Args:
        num_samples: Examples in total, train and validation together.
        input_dim: Features per example.
        num_outputs: Target dimensions (the teacher's outputs).
        hidden: Hidden width of the teacher.
        noise: Standard deviation of the Gaussian noise added to every target, >= 0.
        val_fraction: Fraction of the examples held out for validation, in (0, 1).
        seed: Seed of the inputs, the teacher and the noise.

    Returns:
        Regression data with inputs ``[N, input_dim]`` and targets ``[N, num_outputs]``.

    Raises:
        ValueError: If a size is below 1, ``noise`` is negative or not finite, or
            ``val_fraction`` is outside (0, 1).
    """
    _check_positive("num_outputs", num_outputs)
    if not (math.isfinite(noise) and noise >= 0.0):
        raise ValueError(
            f"dataset noise={noise!r} is not accepted: it is the standard deviation of the "
            "Gaussian noise added to each target, a finite number >= 0"
        )
    gen, x, y = _teacher_outputs(num_samples, input_dim, num_outputs, hidden, val_fraction, seed)
    y = y + noise * torch.randn(y.shape, generator=gen)
    num_val = max(1, round(num_samples * val_fraction))
    return TensorData(
        x[num_val:], y[num_val:], x[:num_val], y[:num_val], "regression", "teacher_regression"
    )


def _teacher_outputs(
    num_samples: int, input_dim: int, num_outputs: int, hidden: int, val_fraction: float, seed: int
) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
    """Gaussian inputs ``x`` and a random teacher's outputs ``tanh(x W1) W2``, with the
    generator that drew them (its next draws are the noise); checks the sizes."""
    for setting, size in (
        ("num_samples", num_samples),
        ("input_dim", input_dim),
        ("hidden", hidden),
    ):
        _check_positive(setting, size)
    _check_fraction("val_fraction", val_fraction)
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(input_dim, hidden, generator=gen) / input_dim**0.5
    w2 = torch.randn(hidden, num_outputs, generator=gen) / hidden**0.5
    x = torch.randn(num_samples, input_dim, generator=gen)
    return gen, x, torch.tanh(x @ w1) @ w2


def mnist(
    data_dir: str = "./data",
    download: bool = True,
    train_limit: int | None = None,
    val_limit: int | None = None,
) -> TensorData:
    """MNIST handwritten digits, read from ``{data_dir}/MNIST/raw/`` (torchvision's layout).

    Images are scaled to [0, 1] and then normalised by the mean and std of the training split;
    validation is the official 10,000-image test split.

    Args:
        data_dir: Folder holding ``MNIST/raw/`` (the idx files, plain or ``.gz``).
        download: Download through torchvision when the files are missing.
        train_limit: Keep only the first this many training images (None: all 60,000).
        val_limit: Keep only the first this many validation images (None: all 10,000).

    Returns:
        Classification data with inputs ``[N, 1, 28, 28]`` and 10 classes.

    Raises:
        FileNotFoundError: If files are missing and ``download`` is False.
        ImportError: If files are missing, ``download`` is True and torchvision is missing.
        ValueError: If a file is malformed or a limit is below 1.
    """
    return _vision.load("mnist", data_dir, download, train_limit, val_limit)


def fashion_mnist(
    data_dir: str = "./data",
    download: bool = True,
    train_limit: int | None = None,
    val_limit: int | None = None,
) -> TensorData:
    """Fashion-MNIST clothing images, read from ``{data_dir}/FashionMNIST/raw/``.

    Same format, sizes, normalisation, arguments and errors as :func:`mnist`.

    Returns:
        Classification data with inputs ``[N, 1, 28, 28]`` and 10 classes.
    """
    return _vision.load("fashion_mnist", data_dir, download, train_limit, val_limit)


def cifar10(
    data_dir: str = "./data",
    download: bool = True,
    train_limit: int | None = None,
    val_limit: int | None = None,
) -> TensorData:
    """CIFAR-10, read from the python pickles in ``{data_dir}/cifar-10-batches-py/``.

    Images are scaled to [0, 1] and normalised per channel by the training split's statistics;
    validation is the official 10,000-image test batch. Arguments and errors are as for
    :func:`mnist` (50,000 training images in ``data_batch_1`` to ``data_batch_5``).

    Returns:
        Classification data with inputs ``[N, 3, 32, 32]`` and 10 classes.
    """
    return _vision.load("cifar10", data_dir, download, train_limit, val_limit)
