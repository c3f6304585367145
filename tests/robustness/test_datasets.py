"""robustness.datasets: digits offline, torchvision formats written by the tests themselves, files."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustness.datasets import DATASET_NAMES, LoadedData, TensorPairDataset, load_dataset, to_tensors
from robustness.errors import InputError


def _check_items(data: LoadedData, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = to_tensors(data.dataset)
    if count is not None:
        assert len(data) == count
    assert x.dtype == torch.float32 and tuple(x.shape[1:]) == data.input_shape
    assert float(x.min()) >= data.bounds[0] and float(x.max()) <= data.bounds[1]
    item_x, item_y = data.dataset[0]
    assert isinstance(item_y, int) and tuple(item_x.shape) == data.input_shape
    assert int(y.min()) >= 0 and int(y.max()) < data.num_classes
    assert len(data.mean) == len(data.std) == data.input_shape[0]
    return x, y


# ----------------------------------------------------------------------------- digits


def test_digits_splits_are_fixed_and_disjoint() -> None:
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    x_tr, _ = _check_items(train, 1347)
    x_te, y_te = _check_items(test, 450)
    assert train.input_shape == (1, 8, 8) and train.num_classes == 10 and train.name == "digits"
    assert set(y_te.tolist()) == set(range(10))
    # the split does not depend on the subsampling seed, and train/test do not share images
    again = load_dataset("digits", split="test", seed=123)
    assert torch.equal(to_tensors(again.dataset)[0], x_te)
    train_rows = {tuple(r) for r in x_tr.flatten(1).tolist()}
    shared = sum(tuple(r) in train_rows for r in x_te.flatten(1).tolist())
    assert shared < 5  # a few of the 1,797 scans are exact duplicates of each other
    # mean/std are those of the training split, and the same for both splits
    assert train.mean == test.mean and train.std == test.std
    assert train.mean[0] == pytest.approx(float(x_tr.mean()), abs=1e-6)
    assert train.std[0] == pytest.approx(float(x_tr.std()), abs=1e-6)


def test_subsample_n_is_seeded() -> None:
    a = to_tensors(load_dataset("digits", n=50, seed=1).dataset)
    b = to_tensors(load_dataset("digits", n=50, seed=1).dataset)
    c = to_tensors(load_dataset("digits", n=50, seed=2).dataset)
    assert a[0].shape == (50, 1, 8, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert len(load_dataset("digits", n=10_000)) == 450


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name_or_path": "imagenet-21k"}, "unknown dataset.*digits.*cifar10.*imagenet"),
        ({"name_or_path": ""}, "non-empty"),
        ({"name_or_path": "digits", "split": "val"}, "unknown split"),
        ({"name_or_path": "digits", "n": 0}, "positive integer"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_dataset(**kwargs)


def test_known_names() -> None:
    assert set(DATASET_NAMES) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagenet"}


# ----------------------------------------------------------------------------- torchvision formats


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the MNIST idx format: magic 0 0 0x08 ndim, big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 12, n_test: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    arrays = {}
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = (np.arange(count) % 10).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = images
        arrays[prefix + "_labels"] = labels
    return arrays


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    arrays = _write_mnist(tmp_path, folder)
    test = load_dataset(name, split="test", data_dir=tmp_path)
    x, y = _check_items(test, 7)
    assert test.input_shape == (1, 28, 28) and test.num_classes == 10 and len(test.mean) == 1
    assert y.tolist() == arrays["t10k_labels"].tolist()
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(arrays["t10k"]).float(), atol=1e-3)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert len(load_dataset(name, split="train", data_dir=str(tmp_path))) == 12


def _write_cifar(root: Path, monkeypatch: pytest.MonkeyPatch, hundred: bool) -> None:
    from torchvision import datasets as tvd

    cls = tvd.CIFAR100 if hundred else tvd.CIFAR10
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    label_key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10
    for file_name, _ in cls.train_list + cls.test_list:
        count = 6 if file_name.startswith("test") else 4
        entry = {
            "data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, classes, size=count)],
        }
        with open(folder / file_name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(classes)]}, f)
    # torchvision checks the md5 of the real files; accept these small ones (md5 None = existence only)
    monkeypatch.setattr(cls, "train_list", [[name, None] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, None] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


@pytest.mark.parametrize(("name", "hundred"), [("cifar10", False), ("cifar100", True)])
def test_cifar_from_pickled_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, hundred: bool) -> None:
    _write_cifar(tmp_path, monkeypatch, hundred)
    test = load_dataset(name, split="test", data_dir=tmp_path)
    _check_items(test, 6)
    assert test.input_shape == (3, 32, 32) and test.num_classes == (100 if hundred else 10)
    assert len(test.mean) == 3
    train = load_dataset(name, split="train", data_dir=tmp_path)
    assert len(train) == (4 if hundred else 20)  # CIFAR-10 has 5 train batches, CIFAR-100 one file


def test_cifar_file_failing_its_checksum_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import calculate_md5

    _write_cifar(tmp_path, monkeypatch, hundred=False)
    folder = tmp_path / tvd.CIFAR10.base_folder
    written = {n: calculate_md5(str(folder / n)) for n, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list}
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, written[n]] for n, _ in tvd.CIFAR10.train_list])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [[n, written[n]] for n, _ in tvd.CIFAR10.test_list])
    assert len(load_dataset("cifar10", split="test", data_dir=tmp_path)) == 6  # every checksum matches
    damaged = folder / "data_batch_3"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        load_dataset("cifar10", split="test", data_dir=tmp_path)  # torchvision checks every file, whatever the split
    message = str(info.value)
    assert str(damaged) in message and "MD5 checksum" in message and "--download" in message
    assert "not found" not in message and "\n" not in message


def test_svhn_from_mat_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    from torchvision import datasets as tvd

    rng = np.random.default_rng(2)
    for split, count in (("train", 5), ("test", 4)):
        images = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)  # SVHN stores HWCN
        labels = np.array([[10], [1], [2], [3], [9]][:count], dtype=np.uint8)  # 10 means digit 0
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": images, "y": labels})
    monkeypatch.setattr(
        tvd.SVHN, "split_list", {k: [url, name, None] for k, (url, name, _) in tvd.SVHN.split_list.items()}
    )
    test = load_dataset("svhn", split="test", data_dir=tmp_path)
    x, y = _check_items(test, 4)
    assert y.tolist() == [0, 1, 2, 3]
    assert test.input_shape == (3, 32, 32) and test.num_classes == 10
    assert len(load_dataset("svhn", split="train", data_dir=tmp_path)) == 5


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_missing_torchvision_dataset_says_where_and_how(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError) as info:
        load_dataset(name, data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "download=True" in message and "--download" in message and "--data-dir" in message


def test_default_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnist(tmp_path, "MNIST")
    monkeypatch.setenv("ROBUSTNESS_DATA_DIR", str(tmp_path))
    assert len(load_dataset("mnist")) == 7


def test_imagefolder_pngs(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls, count in (("cat", 2), ("dog", 3), ("emu", 1)):
        (tmp_path / cls).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}")
    x, y = _check_items(data, 6)
    assert data.num_classes == 3 and data.input_shape == (3, 6, 5)
    assert sorted(y.tolist()) == [0, 0, 1, 1, 1, 2]
    with pytest.raises(InputError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")


def test_imagefolder_keeps_grayscale_one_channel_and_refuses_mixed_sizes(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(4)
    for cls in ("zero", "one"):
        (tmp_path / "gray" / cls).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / "gray" / cls / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path / 'gray'}")
    x, _ = _check_items(data, 4)
    assert data.input_shape == (1, 8, 8) and x.shape[1] == 1
    saved = np.asarray(Image.open(sorted((tmp_path / "gray" / "one").iterdir())[0]), dtype=np.float32) / 255
    assert torch.allclose(data.dataset[0][0][0], torch.from_numpy(saved))  # classes sort: "one" first
    for cls, size in (("a", (6, 5)), ("b", (7, 5))):
        (tmp_path / "mixed" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(tmp_path / "mixed" / cls / "0.png")
    mixed = load_dataset(f"imagefolder:{tmp_path / 'mixed'}")
    with pytest.raises(InputError, match="differ in size.*5x6.*5x7.*resize them"):
        mixed.dataset[1]


# ----------------------------------------------------------------------------- files


def test_npz_uint8_without_channel_dim(tmp_path: Path) -> None:
    x = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    y = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_dataset(str(tmp_path / "d.npz"))
    xs, ys = _check_items(data, 5)
    assert data.input_shape == (1, 4, 4) and data.num_classes == 3
    assert torch.allclose(xs[:, 0], torch.from_numpy(x).float() / 255)
    assert ys.tolist() == y.tolist()


def test_pt_file_with_num_classes_and_subsample(tmp_path: Path) -> None:
    x = torch.rand(20, 3, 4, 4)
    y = torch.arange(20) % 4
    torch.save({"x": x, "y": y, "num_classes": 10}, tmp_path / "d.pt")
    data = load_dataset(str(tmp_path / "d.pt"), n=8, seed=5)
    xs, ys = _check_items(data, 8)
    assert data.num_classes == 10 and data.input_shape == (3, 4, 4)
    assert data.mean == pytest.approx(tuple(x.mean(dim=(0, 2, 3)).tolist()))
    # the kept examples are real rows of the file, paired with their labels
    for xi, yi in zip(xs, ys):
        row = int(torch.nonzero((x == xi).flatten(1).all(dim=1))[0])
        assert int(y[row]) == int(yi)


def test_file_values_outside_bounds(tmp_path: Path) -> None:
    torch.save({"x": torch.full((3, 1, 2, 2), 2.0), "y": torch.zeros(3, dtype=torch.long)}, tmp_path / "d.pt")
    with pytest.raises(InputError, match=r"values in \[2, 2\].*outside"):
        load_dataset(str(tmp_path / "d.pt"))


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_dataset(str(tmp_path / "absent.npz"))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 2, 2), dtype=np.float32), y=np.zeros(0, dtype=np.int64))
    with pytest.raises(InputError, match="empty"):
        load_dataset(str(tmp_path / "empty.npz"))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 1, 2, 2), dtype=np.float32))
    with pytest.raises(InputError, match="has no y"):
        load_dataset(str(tmp_path / "nolabels.npz"))
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 1, 2, 2), dtype=np.float32), y=np.zeros(2, dtype=np.int64))
    with pytest.raises(InputError, match="one label per input"):
        load_dataset(str(tmp_path / "short.npz"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_dataset(str(tmp_path / "junk.pt"))


def test_tensor_pair_dataset_checks_shapes() -> None:
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        TensorPairDataset(torch.zeros(3, 2, 2), torch.zeros(3))
    with pytest.raises(InputError, match="booleans, not class labels"):
        TensorPairDataset(torch.zeros(3, 1, 2, 2), torch.tensor([True, False, True]))
