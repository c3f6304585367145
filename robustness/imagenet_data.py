"""The ``imagenet`` data source: the ILSVRC2012 validation set as RobustBench evaluates it.

The images live in an ImageFolder of the validation set, one folder per class named by its WordNet id
(``DATA_DIR/val/n01440764/ILSVRC2012_val_00000293.JPEG``); ``DATA_DIR/imagenet/val`` and ``DATA_DIR``
itself being that folder work too. Labels are the standard ImageNet-1k indices (the 1000 WordNet ids
sorted: ``n01440764`` is 0, ``n15075141`` is 999), taken from RobustBench's
``helper_files/imagenet_class_to_id_map.json`` in the installed ``robustbench`` package: a folder that
holds only some classes keeps every class's standard index (a plain ImageFolder numbers the classes it
finds, which would silently mislabel them). Without ``robustbench`` all 1000 class folders are required
(their sorted order is then the standard one).

Images are decoded as RGB, one at a time when an item is read (never all at once), and resized and
center-cropped by an :class:`~robustness.input_transform.InputTransform` (default: RobustBench's
"Res256Crop224": shorter side to 256 bilinear, center crop 224); values in ``[0, 1]``, never normalized.
``subset="robustbench"`` takes exactly RobustBench's fixed 5,000 images
(``helper_files/imagenet_test_image_ids.txt``), in that file's order.

The helper files are read from the installed package without importing it (``robustbench`` imports
``autoattack`` and ``pkg_resources`` at import time); they are never copied into this project.

Example::

    data = load_imagenet(data_dir="~/data", subset="robustbench")
    data.name, data.description     # ('imagenet', 'imagenet val (RobustBench 5,000-image subset), resize 256 / ...')
    x, y = data.dataset[0]          # (3, 224, 224) in [0, 1], an int in 0..999
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from robustness.datasets import standard_normalization
from robustness.errors import InputError
from robustness.input_transform import InputTransform

__all__ = ["IMAGENET_CLASSES", "IMAGE_EXTENSIONS", "IMAGENET_SUBSETS", "ImageList", "default_transform",
           "describe_transform", "find_val_dir", "load_imagenet", "robustbench_test_ids", "scan_class_folders",
           "standard_class_index"]

log = logging.getLogger(__name__)

#: the number of ImageNet-1k classes
IMAGENET_CLASSES = 1000
#: the subsets ``subset=`` accepts: RobustBench's fixed 5,000 validation images
IMAGENET_SUBSETS: tuple[str, ...] = ("robustbench",)
#: image files read from a class folder (case-insensitive)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")

_WNID = re.compile(r"^n\d{8}$")
_ZOO = 'pip install -e ".[zoo]"'
_MAP_FILE = "imagenet_class_to_id_map.json"
_IDS_FILE = "imagenet_test_image_ids.txt"


def layout_text(root: Path | str) -> str:
    """The expected folder layout, for messages."""
    return (f"{root}/val/<wnid>/<image>.JPEG, one folder per class named by its WordNet id "
            "(e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG); imagenet/val/ under it, or the val folder "
            "itself, work too")


def default_transform() -> InputTransform:
    """RobustBench's ImageNet preprocessing "Res256Crop224": shorter side to 256 (bilinear), center crop 224."""
    return InputTransform(size=(224, 224), resize=256, interpolation="bilinear")


def describe_transform(transform: InputTransform) -> str:
    """``'resize 256 / crop 224 bilinear'`` (``crop 224x192`` when not square; see :meth:`InputTransform.describe`)."""
    return transform.describe()


def _helper_file(name: str) -> Path | None:
    """``robustbench/helper_files/NAME`` of the installed package, found without importing it; ``None``
    when robustbench is not installed (or lacks the file)."""
    try:
        spec = importlib.util.find_spec("robustbench")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "helper_files" / name
        if path.is_file():
            return path
    return None


def standard_class_index() -> dict[str, int] | None:
    """WordNet id -> standard ImageNet-1k index, from the installed robustbench package; ``None`` when
    robustbench is not installed. A file that is not the 1000-class map is an error."""
    path = _helper_file(_MAP_FILE)
    if path is None:
        return None
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"could not read RobustBench's ImageNet class map {path}: {e}; reinstall robustbench "
                         f"({_ZOO})") from e
    if (not isinstance(mapping, dict) or len(mapping) != IMAGENET_CLASSES
            or sorted(mapping.values()) != list(range(IMAGENET_CLASSES))):
        raise InputError(f"RobustBench's ImageNet class map {path} is not a map of the 1000 classes to 0..999: "
                         f"reinstall robustbench ({_ZOO})")
    return {str(k): int(v) for k, v in mapping.items()}


def robustbench_test_ids() -> list[str]:
    """RobustBench's fixed ImageNet evaluation subset: 5,000 paths ``<wnid>/<file>`` relative to the val
    folder, in the file's order. Raises :class:`InputError` when robustbench is not installed."""
    path = _helper_file(_IDS_FILE)
    if path is None:
        raise InputError(f"subset='robustbench' reads RobustBench's list of its 5,000 ImageNet images from the "
                         f"robustbench package, which is not installed: {_ZOO}")
    try:
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise InputError(f"could not read RobustBench's image list {path}: {e}; reinstall robustbench ({_ZOO})") from e
    if not ids:
        raise InputError(f"RobustBench's image list {path} is empty: reinstall robustbench ({_ZOO})")
    return ids


def _has_class_folders(path: Path) -> bool:
    try:
        return any(e.is_dir() and _WNID.match(e.name) for e in os.scandir(path))
    except OSError:
        return False


def find_val_dir(data_dir: str | Path) -> Path:
    """The validation ImageFolder under ``data_dir``: ``DATA_DIR/val``, ``DATA_DIR/imagenet/val``, or
    ``DATA_DIR`` itself when it holds class folders; an :class:`InputError` with the layout otherwise."""
    root = Path(data_dir).expanduser()
    for candidate in (root / "val", root / "imagenet" / "val"):
        if candidate.is_dir():
            return candidate
    if root.is_dir() and _has_class_folders(root):
        return root
    where = "does not exist" if not root.exists() else "has no val folder and no class folders"
    raise InputError(f"ImageNet validation images not found: {root} {where}. Expected {layout_text(root)}; "
                     "pass the directory with --data-dir (data_dir=)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def scan_class_folders(root: Path, index: Mapping[str, int] | None, what: str = "ImageNet") -> list[tuple[str, int]]:
    """``(path, label)`` for every image under ``root/<wnid>/``, classes and files in sorted order, labels
    the standard indices: ``index`` maps each WordNet id to its index (an unknown folder is an error);
    ``None`` (no robustbench) requires all 1000 class folders and numbers them in sorted order."""
    try:
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise InputError(f"could not list {what} folder {root}: {e}") from e
    if not folders:
        loose = any(_is_image(e.name) for e in os.scandir(root) if e.is_file())
        hint = (" (it holds the images directly: sort them into one folder per class, named by WordNet id, as "
                "ILSVRC2012's validation ground truth says)") if loose else ""
        raise InputError(f"{what} folder {root} has no class folders{hint}. Expected {root}/<wnid>/<image>.JPEG")
    if index is None:
        if len(folders) != IMAGENET_CLASSES:
            raise InputError(
                f"{what} folder {root} has {len(folders)} class folders: without robustbench installed the labels "
                f"are the sorted order of all 1000 ImageNet classes, so every class folder must be there (a subset "
                f"would be mislabeled). Provide all 1000 folders, or install robustbench for its class map: {_ZOO}")
        odd = [f for f in folders if not _WNID.match(f)]
        if odd:  # "0".."999" sort as 0, 1, 10, 100, ...: only WordNet ids sort into the standard order
            raise InputError(f"{what} folder {root} has class folders not named by WordNet id ({', '.join(odd[:3])}"
                             f"{' ...' if len(odd) > 3 else ''}): name each n01440764 ... n15075141, or install "
                             f"robustbench for its class map: {_ZOO}")
        index = {name: i for i, name in enumerate(folders)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise InputError(f"{what} folder {root} has folders that are not ImageNet-1k classes: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}. Each class folder must be "
                         "named by its WordNet id (n01440764 ... n15075141); move the others out")
    samples: list[tuple[str, int]] = []
    for name in folders:
        folder = root / name
        try:
            files = sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
        except OSError as e:
            raise InputError(f"could not list {folder}: {e}") from e
        samples += [(str(folder / f), index[name]) for f in files]
    if not samples:
        raise InputError(f"{what} folder {root} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return samples


class ImageList(Dataset):
    """Images decoded (RGB) and transformed when an item is read: items ``(x, label)``, ``x`` a float
    tensor ``(3, H, W)`` in ``[0, 1]``.

    Example::

        ds = ImageList([("/data/val/n01440764/a.JPEG", 0)], default_transform())
        x, y = ds[0]        # (3, 224, 224), 0
    """

    def __init__(self, samples: list[tuple[str, int]], transform: InputTransform) -> None:
        self.samples = samples
        self.transform = transform
        self._pipeline = transform.torchvision()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise InputError(f"could not decode image {path}: {e}; replace or remove the file") from e
        return self._pipeline(rgb), label


def _robustbench_samples(val: Path, index: Mapping[str, int]) -> list[tuple[str, int]]:
    ids = robustbench_test_ids()
    missing = [i for i in ids if not (val / i).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} of RobustBench's {len(ids)} ImageNet images are missing from {val}, first "
            f"{', '.join(str(val / m) for m in missing[:3])}: provide the whole ILSVRC2012 validation set "
            f"as {val}/<wnid>/<image>.JPEG, or leave out subset='robustbench' (--subset)")
    samples = []
    for i in ids:
        wnid = i.split("/", 1)[0]
        if wnid not in index:
            raise InputError(f"RobustBench's image list names {i}, whose class {wnid} is not in its class map: "
                             f"reinstall robustbench ({_ZOO})")
        samples.append((str(val / i), index[wnid]))
    return samples


def load_imagenet(*, split: str = "test", data_dir: str | Path, input_transform: InputTransform | None = None,
                  subset: str | None = None) -> Any:
    """The ImageNet validation set (see the module docstring) as a :class:`robustness.datasets.LoadedData`.

    Args:
        split: ``"test"`` (or ``"val"``): the validation set, which is what is evaluated; ``"train"``
            is an error.
        data_dir: the directory holding ``val/`` (see :func:`find_val_dir`).
        input_transform: resize/center-crop; ``None``: :func:`default_transform` (Res256Crop224).
        subset: ``None`` (every image found) or ``"robustbench"`` (RobustBench's 5,000 images).

    Raises:
        InputError: no val folder (with the expected layout), unknown class folders, missing images of
            the subset (the first ones named), robustbench missing where it is needed.
    """
    from robustness.datasets import LoadedData

    if split not in ("test", "val"):
        raise InputError(f"imagenet: split {split!r} is not available: the evaluation reads the validation set "
                         "(split='test', the default)")
    if subset is not None and subset not in IMAGENET_SUBSETS:
        raise InputError(f"unknown ImageNet subset {subset!r}: use one of {', '.join(IMAGENET_SUBSETS)} "
                         "(or none for every image found)")
    if input_transform is not None and not isinstance(input_transform, InputTransform):
        raise InputError(f"input_transform must be a robustness.input_transform.InputTransform, got "
                         f"{type(input_transform).__name__}")
    transform = input_transform or default_transform()
    val = find_val_dir(data_dir)
    index = standard_class_index()
    if subset == "robustbench":
        if index is None:
            raise InputError(f"subset='robustbench' reads RobustBench's list of its 5,000 ImageNet images and its "
                             f"class map from the robustbench package, which is not installed: {_ZOO}")
        samples = _robustbench_samples(val, index)
        which = f"RobustBench {len(samples):,}-image subset"
    else:
        samples = scan_class_folders(val, index)
        classes = len({label for _, label in samples})
        which = f"{len(samples):,} images of {classes} classes"
    description = f"imagenet val ({which}), {describe_transform(transform)}"
    log.info("imagenet: %s from %s", description, val)
    mean, std = standard_normalization("imagenet")  # type: ignore[misc]
    return LoadedData(name="imagenet", dataset=ImageList(samples, transform), num_classes=IMAGENET_CLASSES,
                      input_shape=(3, *transform.size), mean=mean, std=std, split="val", description=description)
