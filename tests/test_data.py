"""Datasets: every conf/dataset file instantiates, image files are read in torchvision's layout."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from lrbatch.data import TensorData, datasets, load_tensors, mnist1d, teacher, teacher_regression

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
IMAGE_FOLDERS = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}


def _write(path: Path, payload: bytes, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as file:
            file.write(payload)
    else:
        path.write_bytes(payload)


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Write idx files exactly as torchvision leaves them: magic 2051 images, 2049 labels."""
    n, rows, cols = images.shape
    _write(
        folder / f"{prefix}-images-idx3-ubyte",
        struct.pack(">IIII", 0x00000803, n, rows, cols) + images.tobytes(),
        gz,
    )
    _write(
        folder / f"{prefix}-labels-idx1-ubyte",
        struct.pack(">II", 0x00000801, n) + labels.tobytes(),
        gz,
    )


def _write_cifar(folder: Path, name: str, images: np.ndarray, labels: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": b"tiny", b"data": images.reshape(len(images), -1), b"labels": labels}
    batch[b"filenames"] = [b"img.png"] * len(labels)
    with open(folder / name, "wb") as file:
        pickle.dump(batch, file, protocol=2)


def _fake_images(tmp_path: Path, name: str, gz: bool = False) -> dict[str, np.ndarray]:
    """Write a tiny dataset in torchvision's on-disk format; return what was written."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        train = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
        train_labels = rng.integers(0, 10, 10)
        folder = tmp_path / "cifar-10-batches-py"
        for i in range(5):  # two images per batch file
            part = slice(2 * i, 2 * i + 2)
            _write_cifar(folder, f"data_batch_{i + 1}", train[part], train_labels[part].tolist())
        val = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
        val_labels = rng.integers(0, 10, 4)
        _write_cifar(folder, "test_batch", val, val_labels.tolist())
    else:
        train = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
        train_labels = rng.integers(0, 10, 12, dtype=np.uint8)
        val = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
        val_labels = rng.integers(0, 10, 5, dtype=np.uint8)
        folder = tmp_path / IMAGE_FOLDERS[name]
        _write_idx(folder, "train", train, train_labels, gz)
        _write_idx(folder, "t10k", val, val_labels, gz)
    return {"train": train, "train_labels": train_labels, "val": val, "val_labels": val_labels}


def _config(name: str):
    return OmegaConf.load(CONF / f"{name}.yaml")


@pytest.mark.parametrize("name", ["mnist1d", "digits", "teacher"])
def test_generated_datasets_instantiate(name: str) -> None:
    data = instantiate(_config(name))
    assert isinstance(data, TensorData)
    assert data.task == "classification"
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_outputs == 10
    assert data.num_train > len(data.x_val) > 0
    assert data.x_val.shape[1:] == data.x_train.shape[1:] == data.input_shape
    assert int(data.y_train.min()) >= 0 and int(data.y_train.max()) < data.num_outputs


def test_generated_shapes() -> None:
    assert instantiate(_config("mnist1d")).input_shape == (40,)
    assert instantiate(_config("digits")).input_shape == (64,)


@pytest.mark.parametrize(
    ("name", "gz", "shape"),
    [
        ("mnist", False, (1, 28, 28)),
        ("fashion_mnist", True, (1, 28, 28)),
        ("cifar10", False, (3, 32, 32)),
    ],
)
def test_image_datasets_read_torchvision_layout(
    tmp_path: Path, name: str, gz: bool, shape: tuple[int, ...]
) -> None:
    written = _fake_images(tmp_path, name, gz)
    data = instantiate(_config(name), data_dir=str(tmp_path), download=False)
    assert data.input_shape == shape and data.num_outputs == 10
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert len(data.x_train) == len(written["train"]) and len(data.x_val) == len(written["val"])
    torch.testing.assert_close(data.y_train, torch.as_tensor(written["train_labels"]).long())
    torch.testing.assert_close(data.y_val, torch.as_tensor(written["val_labels"]).long())
    # each channel of the training split has zero mean and unit std after normalisation
    channels = data.x_train.transpose(0, 1).reshape(shape[0], -1)
    torch.testing.assert_close(channels.mean(1), torch.zeros(shape[0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(channels.std(1), torch.ones(shape[0]), atol=1e-4, rtol=0)
    # pixels map back: the normalisation is affine per channel, in the same order as written
    train_pixels = torch.as_tensor(written["train"], dtype=torch.float32).reshape(
        data.x_train.shape
    )
    for c in range(shape[0]):
        fit = np.polyfit(train_pixels[:, c].flatten(), data.x_train[:, c].flatten(), 1)
        residual = data.x_train[:, c] - (fit[0] * train_pixels[:, c] + fit[1])
        assert float(residual.abs().max()) < 1e-4


def test_image_limits_keep_the_first_examples_and_the_scale(tmp_path: Path) -> None:
    _fake_images(tmp_path, "mnist")
    full = instantiate(_config("mnist"), data_dir=str(tmp_path), download=False)
    limited = instantiate(
        _config("mnist"), data_dir=str(tmp_path), download=False, train_limit=3, val_limit=2
    )
    assert len(limited.x_train) == 3 and len(limited.x_val) == 2
    torch.testing.assert_close(limited.x_train, full.x_train[:3])
    torch.testing.assert_close(limited.y_val, full.y_val[:2])


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    _fake_images(tmp_path, "mnist")
    monkeypatch.setenv("LRBATCH_DATA_DIR", str(tmp_path))
    assert instantiate(_config("mnist"), download=False).num_train == 12


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ],
)
def test_missing_files_without_download_name_the_path(
    tmp_path: Path, name: str, expected: str
) -> None:
    # called directly: Hydra's instantiate would wrap the error in an InstantiationException
    with pytest.raises(FileNotFoundError, match=str(tmp_path / expected)):
        getattr(datasets, name)(data_dir=str(tmp_path), download=False)


def test_missing_files_without_torchvision_say_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError, match=r"pip install 'lrbatch\[vision\]'") as info:
        datasets.mnist(data_dir=str(tmp_path), download=True)
    assert str(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte") in str(info.value)


def test_bad_idx_magic_is_reported(tmp_path: Path) -> None:
    _fake_images(tmp_path, "mnist")
    labels = tmp_path / "MNIST/raw/train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">II", 0x00000803, 0))
    with pytest.raises(ValueError, match="magic number"):
        datasets.mnist(data_dir=str(tmp_path), download=False)


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    _fake_images(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as file:
        pickle.dump({"data": Path("x")}, file)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets.cifar10(data_dir=str(tmp_path), download=False)


def test_same_seed_gives_identical_tensors() -> None:
    for build in (mnist1d, teacher, teacher_regression):
        first, second = build(seed=3), build(seed=3)
        other = build(seed=4)
        torch.testing.assert_close(first.x_train, second.x_train, rtol=0, atol=0)
        torch.testing.assert_close(first.y_val, second.y_val, rtol=0, atol=0)
        assert not torch.equal(first.x_train, other.x_train)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty dataset cache, nothing generated yet in this process."""
    monkeypatch.setenv("LRBATCH_CACHE", str(tmp_path / "cache"))
    datasets._mnist1d_arrays.cache_clear()
    yield tmp_path / "cache"
    datasets._mnist1d_arrays.cache_clear()


def test_mnist1d_is_generated_once_then_read_back_from_the_cache(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = mnist1d(num_samples=200, seed=5)
    assert len(list(fresh_cache.glob("mnist1d-*-n200-split0.8-seed5.npz"))) == 1
    assert not list(fresh_cache.glob("*.part"))
    datasets._mnist1d_arrays.cache_clear()  # as in another process

    def fail(*args: object) -> None:
        raise AssertionError("generated again")

    monkeypatch.setattr(datasets, "_generate_mnist1d", fail)
    again = mnist1d(num_samples=200, seed=5)
    for name in ("x_train", "y_train", "x_val", "y_val"):
        torch.testing.assert_close(getattr(again, name), getattr(generated, name), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="generated again"):
        mnist1d(num_samples=200, seed=6)  # other arguments: another file


def test_a_damaged_cache_file_is_generated_again(fresh_cache: Path) -> None:
    generated = mnist1d(num_samples=200, seed=5)
    (saved,) = fresh_cache.glob("*.npz")
    saved.write_bytes(saved.read_bytes()[:100])  # cut short, as by a full disk
    datasets._mnist1d_arrays.cache_clear()
    again = mnist1d(num_samples=200, seed=5)
    torch.testing.assert_close(again.x_train, generated.x_train, rtol=0, atol=0)
    with np.load(saved) as repaired:
        assert repaired["x"].shape == (160, 40)


def test_an_unwritable_cache_only_costs_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("LRBATCH_CACHE", str(tmp_path / "file" / "cache"))
    datasets._mnist1d_arrays.cache_clear()
    assert mnist1d(num_samples=200, seed=5).num_train == 160
    datasets._mnist1d_arrays.cache_clear()


def test_mnist1d_leaves_global_random_state_alone(fresh_cache: Path) -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    mnist1d(num_samples=200, seed=11)
    assert np.random.rand() == expected


def test_teacher_noise_is_the_probability_of_a_resampled_label() -> None:
    clean = teacher(noise=0.0)
    noisy = teacher(noise=0.5)
    labels = torch.cat([clean.y_val, clean.y_train])
    changed = float((torch.cat([noisy.y_val, noisy.y_train]) != labels).float().mean())
    assert changed == pytest.approx(0.5 * 0.9, abs=0.03)  # a resample keeps the class 1 in 10
    with pytest.raises(ValueError, match=r"noise=1\.5.*\[0, 1\]"):
        teacher(noise=1.5)


def test_teacher_regression_targets_are_the_teachers_outputs_plus_noise() -> None:
    clean = instantiate(_config("teacher_regression"))
    assert clean.task == "regression" and clean.num_outputs == 10
    assert clean.y_train.shape == (32768, 10) and clean.input_shape == (32,)
    labelled = teacher(num_samples=40960, noise=0.0)  # the same inputs and teacher
    torch.testing.assert_close(clean.x_train, labelled.x_train, rtol=0, atol=0)
    assert torch.equal(clean.y_train.argmax(dim=1), labelled.y_train)
    noisy = teacher_regression(noise=0.5)
    assert float((noisy.y_train - clean.y_train).std()) == pytest.approx(0.5, rel=0.01)
    with pytest.raises(ValueError, match=r"noise=-0\.1 is not accepted.*finite number >= 0"):
        teacher_regression(noise=-0.1)


def test_tensor_data_to_moves_every_tensor() -> None:
    data = teacher(num_samples=64).to("cpu")
    assert isinstance(data, TensorData) and data.x_train.device.type == "cpu"
    assert data.name == "teacher" and data.num_outputs == 10


class _TinyDataModule(L.LightningDataModule):
    def setup(self, stage: str) -> None:
        self.train = TensorDataset(torch.randn(10, 3), torch.arange(10) % 4)
        self.val = TensorDataset(torch.randn(6, 3), torch.arange(6) % 4)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=4)


def test_load_tensors_accepts_each_kind() -> None:
    x, y = torch.randn(8, 3), torch.arange(8) % 2
    data = teacher(num_samples=32)
    assert load_tensors(data) is data
    from_tuple = load_tensors((x, y, x[:4], y[:4]))
    assert from_tuple.task == "classification" and from_tuple.num_outputs == 2
    from_dict = load_tensors(
        {"x_train": x.numpy(), "y_train": y.numpy(), "x_val": x.numpy(), "y_val": y.numpy()}
    )
    torch.testing.assert_close(from_dict.x_train, x)
    regression = load_tensors([x.double(), torch.randn(8), x, torch.randn(8)])
    assert regression.task == "regression" and regression.y_train.shape == (8, 1)
    assert regression.x_train.dtype == torch.float32 and regression.num_outputs == 1
    module = load_tensors(_TinyDataModule())
    assert module.num_train == 10 and len(module.x_val) == 6
    assert module.input_shape == (3,) and module.num_outputs == 4


@pytest.mark.parametrize("bad", ["data.csv", (1, 2), {"x_train": 1}])
def test_load_tensors_rejects_other_things(bad: object) -> None:
    with pytest.raises(TypeError, match=f"returned a {type(bad).__name__}.*accepted are"):
        load_tensors(bad)


def test_load_tensors_reports_inconsistent_splits() -> None:
    x = torch.randn(4, 2)
    mismatch = r"y_train has dtype torch\.int64 but y_val torch\.float32"
    with pytest.raises(ValueError, match=mismatch):
        load_tensors((x, torch.zeros(4, dtype=torch.int64), x, torch.zeros(4)))
    with pytest.raises(ValueError, match="x_train has 4 examples but y_train has 3"):
        load_tensors((x, torch.zeros(3, dtype=torch.int64), x, torch.zeros(4, dtype=torch.int64)))


def test_integer_labels_in_a_column_are_class_ids() -> None:
    """Labels shaped [N, 1] (as a CSV column reads) are one class id per example."""
    x, y = torch.randn(8, 3), torch.arange(8)[:, None] % 2
    data = load_tensors((x, y, x, y))
    assert data.task == "classification" and data.y_train.shape == (8,)
    assert data.num_outputs == 2
