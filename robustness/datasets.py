"""Datasets for robustness evaluation, as pixel-space tensors in ``[0, 1]``.

:func:`load_dataset` turns a short name or a path into a :class:`LoadedData`: a
``torch.utils.data.Dataset`` whose items are ``(x, y)`` with ``x`` a float tensor of
shape ``(C, H, W)`` in ``bounds`` (``(0, 1)``) and ``y`` an ``int``, plus what an
evaluation needs to know about it: number of classes, input shape and the per-channel
normalization statistics that models trained on it usually expect. Normalization is
never applied to the data; it belongs inside the model
(:class:`robustness.model.NormalizedModel`), so attacks work in pixel space.

Sources:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real images), the
  embedded default; loads offline.
* ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``: torchvision datasets
  read from ``data_dir`` (downloaded there only when ``download=True``).
* ``imagenet``: the ILSVRC2012 validation set from ``DATA_DIR/val/<wnid>/*.JPEG``, standard class
  indices, resized and center-cropped (:mod:`robustness.imagenet_data`); ``subset="robustbench"``:
  RobustBench's fixed 5,000 images.
* ``imagefolder:PATH``: a torchvision ``ImageFolder`` (``PATH/<class>/<image>``).
* a ``.npz`` or ``.pt`` file with arrays ``x`` and ``y``.

Example::

    data = load_dataset("digits", split="test", n=256, seed=0)
    x, y = to_tensors(data.dataset)     # (256, 1, 8, 8) in [0, 1], (256,)
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from robustness.errors import InputError
from robustness.input_transform import InputTransform
from robustness.integrity import pickled_global, read_torch_file
from robustness.norms import check_bounds
from robustness.validation import check_not_boolean

__all__ = [
    "LoadedData",
    "TensorPairDataset",
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "default_data_dir",
    "load_dataset",
    "standard_input_shape",
    "standard_normalization",
    "to_tensors",
]

log = logging.getLogger(__name__)

#: Named datasets :func:`load_dataset` knows, besides ``imagefolder:PATH`` and ``.npz``/``.pt`` files.
DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagenet")

#: Environment variable that overrides the default data directory.
DATA_DIR_ENV = "ROBUSTNESS_DATA_DIR"

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "imagenet-1k": "imagenet",
    "imagenet1k": "imagenet",
    "ilsvrc2012": "imagenet",
}

_SPLITS = ("train", "test")

# Per-channel statistics of the training splits, as commonly used with these datasets.
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
# ImageFolder images are decoded as RGB (grayscale folders as one channel); ImageNet statistics for RGB.
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
}
_NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}

# Errors torchvision (and the formats it parses) raise for missing, partial or corrupt files.
_READ_ERRORS = (RuntimeError, OSError, ValueError, TypeError, AssertionError, EOFError, KeyError,
                pickle.UnpicklingError)

DIGITS_TRAIN_FRACTION = 0.75


@dataclass
class LoadedData:
    """A dataset in pixel space and what an evaluation needs to know about it.

    Attributes:
        name: the dataset's name (``"digits"``, ``"cifar10"``, ``"imagefolder:PATH"``, a file path).
        dataset: items ``(x, y)``: ``x`` a float tensor ``(C, H, W)`` within ``bounds``, ``y`` an ``int``.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        input_shape: ``(C, H, W)`` of one input.
        mean, std: per-channel normalization statistics models trained on this data usually
            expect (not applied to the data: wrap the model in ``NormalizedModel``).
        bounds: the range of pixel values, ``(0.0, 1.0)``.
        split: the split that was loaded (``"train"``/``"test"``; ``"val"`` for ``imagenet``), or ``None``
            for sources without splits (``imagefolder:`` and files), where ``split=`` is ignored.
        description: the report's data line when the name alone does not say what was read
            (``imagenet``: ``"imagenet val (RobustBench 5,000-image subset), resize 256 / crop 224
            bilinear"``); ``None`` otherwise.
    """

    name: str
    dataset: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bounds: tuple[float, float] = (0.0, 1.0)
    split: str | None = None
    description: str | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class TensorPairDataset(Dataset):
    """In-memory dataset over ``x`` of shape ``(N, C, H, W)`` and integer labels ``y`` of shape ``(N,)``.

    Items are ``(x[i], int(y[i]))``; the whole tensors are available as ``.x`` and ``.y``
    (which :func:`to_tensors` uses to avoid a per-item loop).
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise InputError(
                f"expected x of shape (N, C, H, W) and y of shape (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        check_not_boolean(y, "the labels y")
        self.x = x
        self.y = y.long()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.x[index], int(self.y[index])


def standard_input_shape(name: str) -> tuple[int, ...] | None:
    """The ``(C, H, W)`` of one input of a named dataset (``digits``, ``mnist``, ..., ``svhn``); ``None``
    for any other name."""
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else None
    return (1, 8, 8) if key == "digits" else _SHAPES.get(key)  # type: ignore[arg-type]


def standard_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The per-channel ``(mean, std)`` that models trained on a named dataset usually expect
    (``mnist``, ..., ``svhn``, and ``imagenet``: torchvision's pretrained models); ``None`` for
    others (``digits``: the statistics of its train split, see :func:`load_dataset`)."""
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else None
    return _IMAGENET_STATS if key == "imagenet" else _STATS.get(key)  # type: ignore[arg-type]


def default_data_dir() -> Path:
    """Where torchvision datasets live by default: ``$ROBUSTNESS_DATA_DIR`` or ``~/.cache/robustness/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/robustness/data").expanduser()


def to_tensors(dataset: Dataset, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Stack a whole dataset of ``(x, y)`` items into ``x`` of shape ``(N, C, H, W)`` and ``y`` of shape ``(N,)``.

    Fast for :class:`TensorPairDataset` and subsets of it; other datasets are read item by item.

    Example::

        x, y = to_tensors(load_dataset("digits").dataset)    # (450, 1, 8, 8), (450,)
    """
    if isinstance(dataset, TensorPairDataset):
        return dataset.x, dataset.y
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorPairDataset):
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return dataset.dataset.x[idx], dataset.dataset.y[idx]
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise InputError("the dataset is empty: there is nothing to stack")
    xs: list[Tensor] = []
    ys: list[int] = []
    for i in range(n):
        x, y = dataset[i]
        xs.append(torch.as_tensor(x))
        ys.append(int(y))
    try:
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)
    except RuntimeError as e:
        raise InputError(f"the dataset's inputs have different shapes and cannot be stacked into one batch: {e}") from e


def load_dataset(
    name_or_path: str,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    download: bool = False,
    n: int | None = None,
    seed: int = 0,
    input_transform: InputTransform | None = None,
    subset: str | None = None,
) -> LoadedData:
    """Load a dataset by name or path, as pixel-space inputs in ``[0, 1]``.

    Args:
        name_or_path: one of ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``,
            ``svhn``; ``imagefolder:PATH``; or a path to a ``.npz``/``.pt`` file holding ``x``
            (``(N, C, H, W)`` or ``(N, H, W)``; ``uint8`` is divided by 255) and ``y``
            (integer labels), optionally ``num_classes`` (default ``max(y) + 1``: the classes the
            labels need, a lower bound for a model, which may have more) and ``bounds`` (default
            ``(0, 1)``; the values must lie within them). For files, ``mean``/``std`` are computed
            from the file's inputs; for ``imagefolder:`` (decoded as RGB, or as one channel when
            the images are grayscale: a color image among them is then an error) they are the
            ImageNet statistics (RGB). Images of different sizes are an error (never resized).
        split: ``"train"`` or ``"test"``. ``digits`` is split with a fixed permutation
            (``numpy.random.default_rng(0)``, independent of ``seed``): first 75% train,
            the remaining 25% (450 images) test. Ignored for ``imagefolder:`` and files.
        data_dir: root of the torchvision datasets; default :func:`default_data_dir`.
            MNIST is read from ``DATA_DIR/MNIST/raw``, Fashion-MNIST from
            ``DATA_DIR/FashionMNIST/raw``, CIFAR from ``DATA_DIR/cifar-10-batches-py`` and
            ``DATA_DIR/cifar-100-python``, SVHN from ``DATA_DIR/{train,test}_32x32.mat``, ImageNet
            from ``DATA_DIR/val/<wnid>/*.JPEG`` (or ``DATA_DIR/imagenet/val``, or ``DATA_DIR`` being
            that folder; never downloaded).
        download: let torchvision download a missing dataset into ``data_dir``.
        n: keep only ``n`` examples: the first ``n`` indices of a permutation drawn with
            ``numpy.random.default_rng(seed)`` (deterministic for a given ``seed``). ``None``
            keeps the whole split in its original order.
        seed: seed of the subsampling permutation (used only with ``n``).
        input_transform: ``imagenet`` only: the resize/center-crop of the images
            (:class:`~robustness.input_transform.InputTransform`, usually the model's
            ``LoadedModel.input_transform``); ``None``: RobustBench's resize 256, crop 224, bilinear.
        subset: ``imagenet`` only: ``"robustbench"`` for RobustBench's fixed 5,000 images, in its order
            (needs the robustbench package); ``None``: every image found.

    Returns:
        A :class:`LoadedData`.

    Raises:
        InputError: unknown name, bad split, missing or corrupt files (with where it looked
            and how to download), values outside ``[0, 1]``, or an empty dataset.

    Example::

        data = load_dataset("cifar10", split="test", data_dir="~/data", download=True, n=1000)
        loader = torch.utils.data.DataLoader(data.dataset, batch_size=256)
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise InputError(f"dataset must be a non-empty name or path, got {name_or_path!r}")
    if split not in _SPLITS:
        raise InputError(f"unknown split {split!r}: use one of {', '.join(_SPLITS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise InputError(f"n must be a positive integer (or None for the whole split), got {n!r}")

    spec = name_or_path.strip()
    key = _ALIASES.get(spec.lower(), spec.lower())
    if key != "imagenet" and (input_transform is not None or subset is not None):
        raise InputError(f"input_transform= and subset= apply to the imagenet source only, not to {spec!r} "
                         "(the evaluation never resizes other data)")
    if key in ("cifar10-c", "cifar100-c", "imagenet-c"):
        raise InputError(f"{spec} holds common corruptions, read per corruption and severity: use "
                         f"robustness.corruptions.load_corruptions({key!r}, data_dir=...) (CLI: --data {key})")
    if key == "imagenet":
        from robustness.imagenet_data import load_imagenet

        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        data = load_imagenet(split=split, data_dir=root, input_transform=input_transform, subset=subset)
    elif key == "digits":
        data = _load_digits(split)
    elif key in _SHAPES:
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        data = _load_torchvision(key, split, root, download)
    elif spec.lower().startswith("imagefolder:"):
        data = _load_imagefolder(spec[len("imagefolder:"):])
    elif spec.lower().endswith((".npz", ".pt", ".pth")) or Path(spec).expanduser().is_file():
        data = _load_file(Path(spec).expanduser())
    else:
        raise InputError(
            f"unknown dataset {name_or_path!r}: use one of {', '.join(DATASET_NAMES)}, "
            "imagefolder:PATH, or a path to a .npz/.pt file with arrays x and y (common corruptions: "
            "robustness.corruptions.load_corruptions)"
        )

    if data.split is None and split != "test":
        log.info("%s has no splits: split=%r is ignored (the whole source is used)", data.name, split)
    which = data.name if data.split is None else f"{data.name} ({data.split} split)"
    total = len(data.dataset)  # type: ignore[arg-type]
    if total == 0:
        raise InputError(f"dataset {which} is empty: check the files it was read from")
    if n is not None:
        if n > total:
            log.info("n=%d is more than the %d examples of %s: using all of them", n, total, data.name)
        data.dataset = Subset(data.dataset, seeded_indices(total, n, seed))
    log.debug("loaded %s: %d examples of shape %s", which, len(data), data.input_shape)
    return data


def seeded_indices(total: int, n: int, seed: int) -> list[int]:
    """The ``min(n, total)`` indices ``n=``/``seed=`` pick out of ``total``: the first of a permutation drawn with
    ``numpy.random.default_rng(seed)``. Every source subsamples with it, so ``--n N --seed S`` picks the same
    images of a test set and of its corrupted copies."""
    return np.random.default_rng(seed).permutation(total)[: min(n, total)].tolist()


def _load_digits(split: str) -> LoadedData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    n_train = int(DIGITS_TRAIN_FRACTION * len(y))
    train_idx, test_idx = perm[:n_train], perm[n_train:]
    train_x = x[train_idx]
    mean = (float(train_x.mean()),)
    std = (float(train_x.std()),)
    idx = train_idx if split == "train" else test_idx
    return LoadedData(
        name="digits",
        dataset=TensorPairDataset(x[idx].contiguous(), y[idx]),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=mean,
        std=std,
        split=split,
    )


def _torchvision_class(key: str) -> tuple[Callable[..., Dataset], str]:
    """The torchvision dataset constructor for ``key`` and where its files live (for messages)."""
    from torchvision import datasets as tvd

    return {
        "mnist": (tvd.MNIST, "MNIST/raw/"),
        "fashion-mnist": (tvd.FashionMNIST, "FashionMNIST/raw/"),
        "cifar10": (tvd.CIFAR10, "cifar-10-batches-py/"),
        "cifar100": (tvd.CIFAR100, "cifar-100-python/"),
        "svhn": (tvd.SVHN, "{split}_32x32.mat"),
    }[key]


def _load_torchvision(key: str, split: str, root: Path, download: bool) -> LoadedData:
    from torchvision import transforms

    cls, where = _torchvision_class(key)
    kwargs: dict[str, Any] = {"root": str(root), "transform": transforms.ToTensor(), "download": download}
    if key == "svhn":
        kwargs["split"] = split  # SVHN takes split names ("train", "test", "extra"), not train=bool
    else:
        kwargs["train"] = split == "train"
    looked = root / where.format(split=split)
    try:
        dataset = cls(**kwargs)
    except _READ_ERRORS as e:
        if download:
            raise InputError(
                f"could not download or read {key} ({split} split) into {root}: {e}. "
                "Check the network connection and free disk space, or download the files yourself into that directory"
            ) from e
        damaged = _failed_checksum(cls, key, split, root)
        if damaged is not None:
            raise InputError(
                f"{key} ({split} split): {damaged[0]} fails its MD5 checksum (torchvision expects {damaged[1]}, the "
                f"file has {damaged[2]}): it is damaged or not the official file; delete it and pass download=True "
                "(CLI: --download) to fetch it again, or put back a good copy") from e
        raise InputError(
            f"{key} ({split} split) was not found or is incomplete/corrupt in {looked} (data directory {root}). "
            f"Pass download=True (CLI: --download) to fetch it, or data_dir=... (CLI: --data-dir) "
            f"to point at a directory that has it"
        ) from e
    mean, std = _STATS[key]
    return LoadedData(
        name=key,
        dataset=dataset,
        num_classes=_NUM_CLASSES[key],
        input_shape=_SHAPES[key],
        mean=mean,
        std=std,
        split=split,
    )


def _failed_checksum(cls: Any, key: str, split: str, root: Path) -> tuple[Path, str, str] | None:
    """The first file torchvision checks for ``key`` that is there but fails its MD5 checksum, with the
    expected and the actual checksum; ``None`` when every file present matches (or none is checked)."""
    from torchvision.datasets.utils import calculate_md5

    if key in ("cifar10", "cifar100"):  # torchvision checks the train and test files whichever split is asked
        files = [(root / cls.base_folder / name, md5) for name, md5 in cls.train_list + cls.test_list]
        files.append((root / cls.base_folder / cls.meta["filename"], cls.meta["md5"]))
    elif key == "svhn":
        _, name, md5 = cls.split_list[split]
        files = [(root / name, md5)]
    else:  # MNIST and Fashion-MNIST: torchvision checks only that the files exist
        return None
    for path, md5 in files:
        if md5 and path.is_file():
            actual = calculate_md5(str(path))
            if actual != md5:
                return path, md5, actual
    return None


def _open_image(path: str, mode: str, first: str) -> Any:
    """An image file decoded in ``mode`` (``"L"``: grayscale, ``"RGB"``), the mode of the folder's
    ``first`` image; a color image in a grayscale folder is an error, not silently made gray."""
    from PIL import Image

    with open(path, "rb") as handle:
        image = Image.open(handle)
        if mode == "L" and image.mode not in _GRAY_MODES:
            raise InputError(
                f"the image folder mixes grayscale and color images: {first} is grayscale (so the folder is "
                f"decoded as 1 channel) but {path} is {image.mode}: convert them all to one mode "
                f"(PIL's .convert('L') for 1 channel, .convert('RGB') for 3)")
        return image.convert(mode)


class _SameSize(Dataset):
    """An ImageFolder whose images must all have the first one's shape (batches stack them)."""

    def __init__(self, dataset: Any, shape: tuple[int, ...], root: Path) -> None:
        self.dataset, self.shape, self.root = dataset, shape, root
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, y = self.dataset[index]
        if tuple(x.shape) != self.shape:
            raise InputError(
                f"images in {self.root} differ in size: {self.dataset.samples[0][0]} is {self.shape[-1]}x"
                f"{self.shape[-2]}, {self.dataset.samples[index][0]} is {x.shape[-1]}x{x.shape[-2]}: resize them "
                f"to one size first (the evaluation does not resize silently)")
        return x, y


def _load_imagefolder(path_text: str) -> LoadedData:
    from torchvision import datasets as tvd
    from torchvision import transforms

    if not path_text.strip():
        raise InputError("imagefolder: needs a directory, e.g. imagefolder:/data/val")
    root = Path(path_text.strip()).expanduser()
    if not root.is_dir():
        raise InputError(f"image folder {root} not found (or not a directory): expected {root}/<class>/<image files>")
    try:
        dataset = tvd.ImageFolder(str(root), transform=transforms.ToTensor())
    except (FileNotFoundError, OSError, RuntimeError, ValueError) as e:
        raise InputError(
            f"could not read image folder {root}: {e}. Expected one sub-directory per class holding image files"
        ) from e
    if len(dataset) == 0:
        raise InputError(f"image folder {root} has no images")
    try:
        from PIL import Image

        with Image.open(dataset.samples[0][0]) as image:  # reads the header only
            mode = "L" if image.mode in _GRAY_MODES else "RGB"
    except _READ_ERRORS as e:
        raise InputError(f"could not decode the first image of {root}: {e}") from e
    # grayscale folders stay one-channel
    dataset.loader = functools.partial(_open_image, mode=mode, first=dataset.samples[0][0])
    try:
        first, _ = dataset[0]
    except _READ_ERRORS as e:
        raise InputError(f"could not decode the first image of {root}: {e}") from e
    dataset = _SameSize(dataset, tuple(first.shape), root)
    channels = int(first.shape[0])
    mean, std = _IMAGENET_STATS if channels == 3 else ((0.5,) * channels, (0.5,) * channels)
    return LoadedData(
        name=f"imagefolder:{root}",
        dataset=dataset,
        num_classes=len(dataset.classes),
        input_shape=tuple(int(s) for s in first.shape),
        mean=mean,
        std=std,
    )


_SAVE_ADVICE = "save a dict {'x': tensor, 'y': tensor} with torch.save, or arrays x and y with numpy.savez"


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as e:  # any parse failure of a user file: corrupt, truncated, pickled objects
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"could not read dataset file {path}: {detail}. It may be corrupt or truncated, or hold "
                         f"Python objects (never unpickled); {_SAVE_ADVICE}") from e


def _read_pt(path: Path) -> dict[str, Any]:
    """A ``.pt`` data file, its zip checksums verified, read with ``weights_only=True``."""
    def corrupt(why: str) -> InputError:
        return InputError(f"dataset file {path} is corrupt or truncated ({why}): {_SAVE_ADVICE} again")

    try:
        with warnings.catch_warnings():  # torch's note on reading sparse tensors: _load_file refuses them anyway
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            loaded = read_torch_file(path, what="dataset file", corrupt=corrupt,
                                     objects_fix=f"a .pt data file holds tensors only; {_SAVE_ADVICE}")
    except InputError as e:
        if (pickled_global(e.__cause__ or e) or "").startswith("numpy"):
            raise InputError(f"{path} holds NumPy arrays, which torch.load(weights_only=True) does not read: save "
                             "torch tensors in a .pt file (torch.from_numpy), or the arrays with numpy.savez "
                             "as a .npz file") from e
        raise
    if not isinstance(loaded, dict):
        raise InputError(f"{path} holds a {type(loaded).__name__}, expected a dict with tensors 'x' and 'y'")
    return loaded


def _load_file(path: Path) -> LoadedData:
    if not path.is_file():  # checked without opening it: a FIFO would block, a device never end
        if path.exists():
            raise InputError(f"dataset file {path} is not a regular file (a directory, FIFO or device): give a "
                             ".npz or .pt file")
        raise InputError(f"dataset file {path} not found")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".pt", ".pth"):
        raise InputError(f"unsupported dataset file {path}: use a .npz file (numpy.savez(x=..., y=...)) or a .pt file")
    arrays = _read_npz(path) if suffix == ".npz" else _read_pt(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise InputError(f"{path} has no {' or '.join(missing)}: it must hold x (inputs) and y (labels); found {sorted(arrays)}")
    try:
        x = arrays["x"] if isinstance(arrays["x"], Tensor) else torch.as_tensor(np.asarray(arrays["x"]))
        y = arrays["y"] if isinstance(arrays["y"], Tensor) else torch.as_tensor(np.asarray(arrays["y"]))
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"x and y in {path} must be numeric arrays: {e}") from e
    for key, t in (("x", x), ("y", y)):  # tensors without plain values would fail deep inside torch
        odd = ("a meta-device tensor, which holds no values" if t.is_meta else "a nested tensor" if t.is_nested
               else "a quantized tensor" if t.is_quantized else f"a {t.layout} tensor" if t.layout != torch.strided
               else None)
        if odd:
            hint = f" ({key}.to_dense())" if t.layout != torch.strided else ""
            raise InputError(f"{key} in {path} is {odd}: save a dense tensor holding its values{hint}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise InputError(f"x in {path} has shape {tuple(x.shape)}: expected (N, C, H, W) or (N, H, W)")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise InputError(f"x in {path} has shape {tuple(x.shape)}, which looks channels-last (N, H, W, C): store "
                         "it as (N, C, H, W), e.g. x.transpose(0, 3, 1, 2) in NumPy or x.permute(0, 3, 1, 2)")
    y = y.reshape(-1) if y.dim() == 2 and 1 in y.shape else y
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"y in {path} has shape {tuple(y.shape)}: expected ({x.shape[0]},), one label per input")
    if y.dtype.is_complex:
        raise InputError(f"y in {path} must hold integer class labels, got dtype {y.dtype}")
    check_not_boolean(y, f"the labels y in {path}")
    if y.dtype.is_floating_point:
        if y.numel() and not torch.equal(y, y.round()):
            raise InputError(f"y in {path} must hold integer class labels, got dtype {y.dtype} with fractional values")
    if x.shape[0] == 0:
        raise InputError(f"dataset file {path} is empty (x has shape {tuple(x.shape)})")
    y = y.long()
    if int(y.min()) < 0:
        raise InputError(f"labels in {path} must be >= 0, found {int(y.min())}")

    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.dtype.is_floating_point:
        x = x.float()
    else:
        raise InputError(f"x in {path} has dtype {x.dtype}: use uint8 (0..255) or floats in [0, 1]")
    bounds = (0.0, 1.0)
    if "bounds" in arrays:
        bounds = check_bounds(tuple(float(b) for b in torch.as_tensor(np.asarray(arrays["bounds"])).reshape(-1).tolist()))
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"x in {path} contains NaN or inf values: clean the data (or drop those examples)")
    lo, hi = float(x.min()), float(x.max())
    if not (bounds[0] <= lo and hi <= bounds[1]):
        raise InputError(
            f"x in {path} has values in [{lo:g}, {hi:g}], outside the bounds [{bounds[0]:g}, {bounds[1]:g}]: "
            "scale the inputs to [0, 1] (e.g. divide 0..255 values by 255) and keep normalization inside the model"
        )

    num_classes = int(y.max()) + 1
    if "num_classes" in arrays:
        declared = int(torch.as_tensor(np.asarray(arrays["num_classes"])).reshape(-1)[0])
        if declared < num_classes:
            raise InputError(f"{path} declares num_classes={declared} but has label {num_classes - 1}")
        num_classes = declared

    dims = [0, 2, 3]
    mean = tuple(float(v) for v in x.mean(dim=dims))
    std = tuple(max(float(v), 1e-6) for v in x.std(dim=dims)) if x.numel() > x.shape[1] else (1.0,) * x.shape[1]
    return LoadedData(
        name=str(path),
        dataset=TensorPairDataset(x.contiguous(), y),
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in x.shape[1:]),
        mean=mean,
        std=std,
        bounds=bounds,
    )
