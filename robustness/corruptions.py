"""Common corruptions as a data source: CIFAR-10-C, CIFAR-100-C and ImageNet-C, per corruption and severity.

Hendrycks and Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", corrupt each test image with 15 corruptions (noise, blur, weather, digital) at 5
severities. RobustBench's ``corruptions`` threat model measures the accuracy on each (corruption,
severity) pair and ranks models by the mean over all 75 (:mod:`robustness.corruption_report`).

Layouts (``data_dir``, as RobustBench's downloads unpack them):

* ``cifar10-c`` / ``cifar100-c``: ``DIR/CIFAR-10-C/<corruption>.npy`` (``DIR/CIFAR-100-C/...``), each of
  shape ``(5 * N, 32, 32, 3)`` ``uint8``, severity ``s`` in rows ``(s - 1) * N`` to ``s * N - 1``, the
  ``N`` test images in test-set order; ``labels.npy`` beside them (``5 * N`` labels, or ``N``). ``DIR``
  itself holding the ``.npy`` files works too. Read with NumPy memory mapping (``mmap_mode="r"``:
  only the rows evaluated are read) and never unpickled (``allow_pickle=False``).
* ``imagenet-c``: ``DIR/<corruption>/<severity>/<wnid>/<image>.JPEG`` (or ``DIR/ImageNet-C/...``), the
  224x224 center crops of the validation images, labels the standard ImageNet-1k indices
  (:mod:`robustness.imagenet_data`). Every corruption and severity must hold the same images.

Default corruptions: :data:`CORRUPTIONS`, the 15 RobustBench evaluates; each must be present (other
files are ignored), or restrict them with ``corruptions=`` (CLI: ``--corruptions``). ``n=`` keeps the
same seeded images for every corruption and severity: the first ``n`` of
``numpy.random.default_rng(seed).permutation(N)``, the same images :func:`robustness.datasets.load_dataset`
picks from the clean test set with the same ``n`` and ``seed``.

Example::

    data = load_corruptions("cifar10-c", data_dir="~/data", corruptions=["fog", "snow"], n=500)
    x, y = data.dataset("fog", 5)[0]     # (3, 32, 32) in [0, 1], its label
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from robustness.datasets import standard_normalization
from robustness.errors import InputError
from robustness.input_transform import InputTransform

__all__ = ["CORRUPTIONS", "CORRUPTION_DATASETS", "SEVERITIES", "CorruptionData", "NpyRows",
           "clean_name", "corruption_name", "load_corruptions"]

log = logging.getLogger(__name__)

#: the 15 corruptions of CIFAR-10-C, CIFAR-100-C and ImageNet-C that RobustBench evaluates
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: the severity levels
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: corruption data set -> (its folder name in RobustBench's layout, the clean data set, classes)
CORRUPTION_DATASETS: dict[str, tuple[str, str, int]] = {
    "cifar10-c": ("CIFAR-10-C", "cifar10", 10),
    "cifar100-c": ("CIFAR-100-C", "cifar100", 100),
    "imagenet-c": ("ImageNet-C", "imagenet", 1000),
}
_ALIASES = {"cifar-10-c": "cifar10-c", "cifar-100-c": "cifar100-c", "imagenetc": "imagenet-c",
            "cifar10c": "cifar10-c", "cifar100c": "cifar100-c"}


def corruption_name(name: str) -> str | None:
    """``"cifar10-c"`` for ``"CIFAR-10-C"`` and the other spellings; ``None`` for a name that is not one."""
    key = name.strip().lower() if isinstance(name, str) else ""
    key = _ALIASES.get(key, key)
    return key if key in CORRUPTION_DATASETS else None


def clean_name(name: str) -> str:
    """The clean data set of a corruption data set: ``"cifar10"`` for ``"cifar10-c"``."""
    key = corruption_name(name)
    if key is None:
        raise InputError(f"unknown corruption data set {name!r}: use one of {', '.join(CORRUPTION_DATASETS)}")
    return CORRUPTION_DATASETS[key][1]


class NpyRows(Dataset):
    """Rows of a ``(M, H, W, C)`` ``uint8`` array (memory-mapped) as items ``(x, label)``, ``x`` a float
    tensor ``(C, H, W)`` in ``[0, 1]``; :meth:`batch` reads many rows at once."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> None:
        self.images, self.labels, self.rows = images, labels, rows

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        row = int(self.rows[index])
        return _to_tensor(np.array(self.images[row:row + 1]))[0], int(self.labels[row])

    def batch(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Items ``start .. stop - 1`` as one batch ``(x, y)``."""
        rows = self.rows[start:stop]
        order = np.argsort(rows, kind="stable")  # a memory map reads sorted rows sequentially
        sorted_rows = rows[order]
        x = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        x[order] = self.images[sorted_rows]
        return _to_tensor(x), torch.from_numpy(self.labels[rows].astype(np.int64))


def _to_tensor(x: np.ndarray) -> Tensor:
    """``(N, H, W, C)`` ``uint8`` (an array of its own, not a view of the memory map) -> ``(N, C, H, W)`` floats."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class CorruptionData:
    """Corrupted test images, per corruption and severity, the same images for every pair.

    Attributes:
        name: ``"cifar10-c"``, ``"cifar100-c"`` or ``"imagenet-c"``.
        root: the folder the files were read from.
        corruptions, severities: what is evaluated, in order.
        indices: the image indices (within one severity, in test-set order) evaluated, the same for
            every corruption and severity: ``range(N)`` or the seeded ``n`` of them.
        total: ``N``, the images per corruption and severity in the files.
        num_classes, input_shape, mean, std, bounds: as :class:`robustness.datasets.LoadedData`.
        seed: the seed of the ``n`` draw (recorded even when every image is used).
        description: the report's data line.
        input_transform: the resize/crop applied (``imagenet-c``), else ``None``.
    """

    name: str
    root: Path
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    indices: list[int]
    total: int
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seed: int
    description: str
    bounds: tuple[float, float] = (0.0, 1.0)
    input_transform: InputTransform | None = None
    _sources: dict[tuple[str, int], Dataset] = field(default_factory=dict, repr=False)
    #: imagenet-c: the evaluated images as ``<wnid>/<file>`` with their labels, and the model's own transform
    #: (resize/crop of the full validation images), for the clean accuracy on the same images
    _clean_images: list[tuple[str, int]] = field(default_factory=list, repr=False)
    _clean_transform: InputTransform | None = field(default=None, repr=False)

    def __len__(self) -> int:
        """Images per corruption and severity."""
        return len(self.indices)

    def dataset(self, corruption: str, severity: int) -> Dataset:
        """The evaluated images of one corruption at one severity: items ``(x, label)``."""
        try:
            return self._sources[(corruption, int(severity))]
        except KeyError:
            raise InputError(f"{self.name}: {corruption} at severity {severity} was not loaded: loaded "
                             f"{', '.join(self.corruptions)} at severities {list(self.severities)}") from None

    def pairs(self) -> Iterator[tuple[str, int]]:
        """Every ``(corruption, severity)`` in order."""
        for c in self.corruptions:
            for s in self.severities:
                yield c, s

    def clean(self, data_dir: str | Path | None = None) -> tuple[Dataset | None, str]:
        """The same images uncorrupted, when the clean test set is found, and a note saying how
        (or why not): ``cifar10-c``/``cifar100-c`` look for the torchvision CIFAR files in ``data_dir``
        (default: the corruption folder's parent and the folder itself); a test set whose labels differ
        from the corruption labels is refused (not the same images). ``imagenet-c``: the validation images
        of the same names (``data_dir``, default the ImageNet-C folder's parent: ``val/<wnid>/<file>``), with
        the model's own resize/crop; any missing is "not measured"."""
        from robustness.datasets import load_dataset, to_tensors

        base = CORRUPTION_DATASETS[self.name][1]
        if self.name == "imagenet-c":
            return self._imagenet_clean(data_dir)
        places = [Path(data_dir).expanduser()] if data_dir is not None else [self.root.parent, self.root]
        for place in places:
            try:
                clean = load_dataset(base, split="test", data_dir=place)
            except InputError:
                continue
            if len(clean) != self.total:
                return None, (f"not measured: the {base} test set in {place} has {len(clean)} images, the "
                              f"corruption files {self.total}")
            subset = Subset(clean.dataset, list(self.indices))
            labels = self.labels()
            _, clean_labels = to_tensors(Subset(_LabelsOnly(clean.dataset), list(self.indices)))
            if not torch.equal(clean_labels, labels):
                return None, (f"not measured: the labels of the {base} test set in {place} differ from "
                              f"{self.name}'s: they are not the same images")
            return subset, f"{base} test set in {place}, the same {len(self.indices)} images"
        return None, (f"not measured: no {base} test set found in {' or '.join(str(p) for p in places)} "
                      f"(torchvision's files, e.g. {places[0]}/cifar-10-batches-py)")

    def _imagenet_clean(self, data_dir: str | Path | None) -> tuple[Dataset | None, str]:
        """ImageNet-C's images are 224x224 center crops of validation images with the same file names: the
        clean accuracy is that of those validation images, with the model's own resize/crop (the imagenet
        source's), looked for in ``data_dir`` (default: the ImageNet-C folder's parent)."""
        from robustness.imagenet_data import ImageList, default_transform, find_val_dir

        place = Path(data_dir).expanduser() if data_dir is not None else self.root.parent
        try:
            val = find_val_dir(place)
        except InputError:
            return None, (f"not measured: no ImageNet validation folder in {place} (val/<wnid>/<image>.JPEG; or "
                          "evaluate --data imagenet for the clean accuracy)")
        missing = [rel for rel, _ in self._clean_images if not (val / rel).is_file()]
        if missing or not self._clean_images:
            return None, (f"not measured: {len(missing)} of the {len(self._clean_images)} evaluated images are "
                          f"not in {val} (e.g. {', '.join(missing[:2])}): not the same images")
        transform = self._clean_transform or default_transform()
        clean = ImageList([(str(val / rel), label) for rel, label in self._clean_images], transform)
        return clean, (f"imagenet val in {val}, the same {len(self._clean_images)} images, "
                       f"{transform.describe()}")

    def labels(self) -> Tensor:
        """The labels of the evaluated images (the same for every corruption and severity)."""
        first = self.dataset(self.corruptions[0], self.severities[0])
        if isinstance(first, NpyRows):
            return torch.from_numpy(first.labels[first.rows].astype(np.int64))
        return torch.tensor([first.samples[i][1] for i in range(len(first))], dtype=torch.long)  # type: ignore


class _LabelsOnly(Dataset):
    """The labels of a dataset, without decoding a torchvision CIFAR dataset's images (its ``targets``)."""

    def __init__(self, dataset: Any) -> None:
        targets = getattr(dataset, "targets", None)
        self.targets = list(targets) if targets is not None else [int(dataset[i][1]) for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.zeros(1), int(self.targets[index])


def _check_selection(corruptions: Sequence[str] | None, severities: Sequence[int]) -> tuple[tuple[str, ...],
                                                                                           tuple[int, ...]]:
    if isinstance(corruptions, str):
        corruptions = [c.strip() for c in corruptions.split(",")]
    chosen = tuple(CORRUPTIONS if corruptions is None else corruptions)
    if not chosen or any(not isinstance(c, str) or not c.strip() for c in chosen):
        raise InputError(f"corruptions must be a non-empty list of names, e.g. fog,snow; got {corruptions!r}")
    chosen = tuple(c.strip().lower() for c in chosen)
    if len(set(chosen)) != len(chosen):
        raise InputError(f"corruptions list a name twice: {', '.join(chosen)}")
    if isinstance(severities, (int, str)) or not len(severities):
        raise InputError(f"severities must be a non-empty list of levels from 1 to 5, got {severities!r}")
    levels = []
    for s in severities:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= int(s) <= 5:
            raise InputError(f"severities must be levels from 1 to 5, got {s!r} in {list(severities)!r}")
        levels.append(int(s))
    if len(set(levels)) != len(levels):
        raise InputError(f"severities list a level twice: {levels}")
    return chosen, tuple(levels)


def _pick(total: int, n: int | None, seed: int) -> list[int]:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise InputError(f"n must be a positive integer (or None for every image), got {n!r}")
    if n is None:
        return list(range(total))
    if n > total:
        log.info("n=%d is more than the %d images per corruption and severity: using all of them", n, total)
    from robustness.datasets import seeded_indices

    return seeded_indices(total, n, seed)


def _restrict_hint(missing: list[str]) -> str:
    return ("; evaluate the others only with corruptions=[...] (CLI: --corruptions a,b), or provide the missing "
            "files" if missing else "")


def _cifar_root(data_dir: Path, folder: str) -> Path:
    for candidate in (data_dir / folder, data_dir):
        if (candidate / "labels.npy").is_file():
            return candidate
    raise InputError(f"{folder} not found: neither {data_dir / folder} nor {data_dir} holds labels.npy. Expected "
                     f"{data_dir}/{folder}/<corruption>.npy (shape (5*N, 32, 32, 3), uint8) and "
                     f"{data_dir}/{folder}/labels.npy, as RobustBench and the Zenodo archive unpack them; pass the "
                     "directory with --data-dir (data_dir=)")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # any parse failure of a user file: truncated, pickled objects, not .npy
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"could not read {path}: {detail}. It may be truncated or not a NumPy .npy file; "
                         "download it again") from e


def _load_cifar_c(key: str, root: Path, chosen: tuple[str, ...], levels: tuple[int, ...], n: int | None,
                  seed: int) -> CorruptionData:
    folder, base, classes = CORRUPTION_DATASETS[key]
    root = _cifar_root(root, folder)
    missing = [f"{c}.npy" for c in chosen if not (root / f"{c}.npy").is_file()]
    if missing:
        raise InputError(f"{key}: {len(missing)} corruption file{'s' if len(missing) > 1 else ''} missing from "
                         f"{root}: {', '.join(missing)}{_restrict_hint(missing)}")
    labels = _load_npy(root / "labels.npy")
    arrays = {c: _load_npy(root / f"{c}.npy") for c in chosen}
    first = arrays[chosen[0]]
    for c, a in arrays.items():
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"{root / (c + '.npy')} holds {a.dtype} of shape {a.shape}: expected uint8 images of "
                             "shape (5*N, H, W, 3)")
        if a.shape != first.shape:
            raise InputError(f"{root / (c + '.npy')} has shape {a.shape} but {chosen[0]}.npy has {first.shape}: "
                             "every corruption must hold the same images")
    if first.shape[0] % len(SEVERITIES):
        raise InputError(f"{root / (chosen[0] + '.npy')} has {first.shape[0]} rows, not 5 severities of the same "
                         "number of images")
    total = first.shape[0] // len(SEVERITIES)
    if labels.ndim != 1 or labels.shape[0] not in (total, first.shape[0]) or labels.dtype.kind not in "iu":
        raise InputError(f"{root / 'labels.npy'} holds {labels.dtype} of shape {labels.shape}: expected integer "
                         f"labels of shape ({first.shape[0]},) or ({total},)")
    labels = np.asarray(labels)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise InputError(f"{root / 'labels.npy'} has labels outside 0..{classes - 1}: is it {folder}'s?")
    if labels.shape[0] == total:  # one label per image: the same for every severity
        labels = np.tile(labels, len(SEVERITIES))
    indices = _pick(total, n, seed)
    picked = np.asarray(indices, dtype=np.int64)
    sources = {(c, s): NpyRows(arrays[c], labels, picked + (s - 1) * total) for c in chosen for s in levels}
    mean, std = standard_normalization(base)  # type: ignore[misc]
    return CorruptionData(
        name=key, root=root, corruptions=chosen, severities=levels, indices=indices, total=total,
        num_classes=classes, input_shape=(3, int(first.shape[1]), int(first.shape[2])), mean=mean, std=std,
        seed=seed, description=_describe(key, chosen, levels, len(indices), total), _sources=sources)


def _imagenet_c_root(data_dir: Path, chosen: tuple[str, ...]) -> Path:
    for candidate in (data_dir / "ImageNet-C", data_dir):
        if candidate.is_dir() and any((candidate / c).is_dir() for c in chosen):
            return candidate
    raise InputError(f"ImageNet-C not found in {data_dir}: expected {data_dir}/<corruption>/<severity>/<wnid>/"
                     f"<image>.JPEG (e.g. {data_dir}/fog/5/n01440764/ILSVRC2012_val_00000293.JPEG), or the same "
                     f"under {data_dir}/ImageNet-C; pass the directory with --data-dir (data_dir=)")


def _robustbench_c_samples(folder: Path) -> list[tuple[str, int]]:
    """RobustBench's 5,000 images (its list, in order) in one ImageNet-C corruption/severity folder."""
    from robustness.imagenet_data import robustbench_test_ids, standard_class_index

    index = standard_class_index()
    ids = robustbench_test_ids()
    if index is None:
        raise InputError('subset="robustbench" needs the robustbench package: pip install -e ".[zoo]"')
    missing = [i for i in ids if not (folder / i).is_file()]
    if missing:
        raise InputError(f"imagenet-c: {len(missing)} of RobustBench's {len(ids)} images are missing from {folder}, "
                         f"first {', '.join(str(folder / m) for m in missing[:3])}: provide them, or leave out the "
                         "subset")
    return [(str(folder / i), index[i.split("/", 1)[0]]) for i in ids]


def _load_imagenet_c(root: Path, chosen: tuple[str, ...], levels: tuple[int, ...], n: int | None, seed: int,
                     input_transform: InputTransform | None, subset: str | None) -> CorruptionData:
    from robustness.imagenet_data import ImageList, scan_class_folders, standard_class_index

    root = _imagenet_c_root(root, chosen)
    missing = [f"{c}/{s}" for c in chosen for s in levels if not (root / c / str(s)).is_dir()]
    if missing:
        raise InputError(f"imagenet-c: {len(missing)} corruption/severity folder{'s' if len(missing) > 1 else ''} "
                         f"missing from {root}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
                         f"{_restrict_hint(missing)} (--severities for levels)")
    # ImageNet-C holds 224x224 center crops already: resize to the model's input size only (RobustBench's
    # "Res224"), never resize-then-crop again (that would zoom into the crop)
    size = input_transform.size if input_transform is not None else (224, 224)
    interpolation = input_transform.interpolation if input_transform is not None else "bilinear"
    transform = InputTransform(size=size, resize=None, interpolation=interpolation, mode="resize")
    index = standard_class_index()
    reference: list[tuple[str, int]] | None = None
    sources: dict[tuple[str, int], Dataset] = {}
    for c in chosen:
        for s in levels:
            folder = root / c / str(s)
            samples = (_robustbench_c_samples(folder) if subset == "robustbench"
                       else scan_class_folders(folder, index, what="ImageNet-C"))
            cut = len(str(folder)) + 1  # the paths start with the folder: names relative to it, cheaply
            relative = [(p[cut:], y) for p, y in samples]
            if reference is None:
                reference = relative
            elif relative != reference:
                extra = sorted(set(relative) ^ set(reference))[:3]
                raise InputError(f"imagenet-c: {folder} does not hold the same images as "
                                 f"{root / chosen[0] / str(levels[0])} (they differ in e.g. "
                                 f"{', '.join(p for p, _ in extra)}): every corruption and severity must hold the "
                                 "same images")
            sources[(c, s)] = samples  # type: ignore[assignment]
    total = len(reference or [])
    indices = _pick(total, n, seed)
    for key, samples in sources.items():
        sources[key] = ImageList([samples[i] for i in indices], transform)  # type: ignore[index]
    h, w = transform.size
    which = ", RobustBench's 5,000-image subset" if subset == "robustbench" else ""
    description = (f"{_describe('imagenet-c', chosen, levels, len(indices), total)}{which}, resized to "
                   f"{h}x{w} {transform.interpolation}")
    mean, std = standard_normalization("imagenet")  # type: ignore[misc]
    return CorruptionData(
        name="imagenet-c", root=root, corruptions=chosen, severities=levels, indices=indices, total=total,
        num_classes=1000, input_shape=(3, *transform.size), mean=mean, std=std, seed=seed,
        description=description, input_transform=transform,
        _sources=sources, _clean_images=[(reference or [])[i] for i in indices],
        _clean_transform=input_transform if input_transform is not None and input_transform.mode != "resize"
        else None)


def _describe(key: str, chosen: tuple[str, ...], levels: tuple[int, ...], n: int, total: int) -> str:
    which = "the 15 standard corruptions" if set(chosen) == set(CORRUPTIONS) else f"{len(chosen)} corruptions"
    images = f"all {total:,} images" if n == total else f"{n:,} of {total:,} images"
    return f"{key} ({which}, severities {','.join(map(str, levels))}; {images} each)"


def load_corruptions(
    name: str,
    *,
    data_dir: str | Path,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    n: int | None = None,
    seed: int = 0,
    input_transform: InputTransform | None = None,
    subset: str | None = None,
) -> CorruptionData:
    """Load a common-corruptions data set (see the module docstring for the layouts).

    Args:
        name: ``cifar10-c``, ``cifar100-c`` or ``imagenet-c``.
        data_dir: the folder holding ``CIFAR-10-C/`` (``CIFAR-100-C/``, ``ImageNet-C/``), or that folder itself.
        corruptions: the corruptions to evaluate; ``None``: the 15 standard ones (:data:`CORRUPTIONS`).
        severities: the levels to evaluate, from 1 to 5.
        n: evaluate ``n`` seeded images (the same for every corruption and severity); ``None``: all.
        seed: seed of the ``n`` draw.
        input_transform: ``imagenet-c`` only: its ``size`` is the model's input size, to which the images
            (224x224 center crops already) are resized; its ``resize`` is not used (no second crop).
        subset: ``imagenet-c`` only: ``"robustbench"`` for RobustBench's fixed 5,000 images (its list,
            in its order, as RobustBench evaluates ImageNet-C); ``None``: every image found.

    Raises:
        InputError: unknown name, missing folder (with the layout), missing corruption files (each
            named, with how to restrict the corruptions), files of the wrong shape or type.

    Example::

        data = load_corruptions("cifar10-c", data_dir="~/data", severities=[1, 3, 5], n=1000, seed=0)
    """
    key = corruption_name(name)
    if key is None:
        raise InputError(f"unknown corruption data set {name!r}: use one of {', '.join(CORRUPTION_DATASETS)}")
    if data_dir is None:
        raise InputError(f"{key} needs data_dir= (CLI: --data-dir): the folder holding "
                         f"{CORRUPTION_DATASETS[key][0]}/")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    chosen, levels = _check_selection(corruptions, severities)
    root = Path(data_dir).expanduser()
    if subset is not None and (key != "imagenet-c" or subset != "robustbench"):
        raise InputError(f"subset={subset!r}: only imagenet-c takes a subset, and only 'robustbench'")
    if key == "imagenet-c":
        data = _load_imagenet_c(root, chosen, levels, n, int(seed), input_transform, subset)
    else:
        if input_transform is not None:
            raise InputError(f"input_transform= applies to imagenet-c only; {key} is evaluated at its own 32x32 "
                             "(the evaluation never resizes it)")
        data = _load_cifar_c(key, root, chosen, levels, n, int(seed))
    log.info("loaded %s from %s", data.description, data.root)
    return data
