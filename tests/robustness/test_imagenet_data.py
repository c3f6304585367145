"""The imagenet data source: JPEGs written in val/<real wnid>/ in tmp_path, standard labels, resize then crop,
RobustBench's subset, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustness import imagenet_data
from robustness.datasets import DATASET_NAMES, load_dataset, to_tensors
from robustness.errors import InputError
from robustness.input_transform import InputTransform

SMALL = InputTransform(size=(8, 8), resize=12)
WNIDS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}  # the standard ImageNet-1k indices


def _jpeg(path: Path, size=(20, 16), color=(120, 60, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)
    return path


@pytest.fixture()
def val(tmp_path) -> Path:
    for wnid in WNIDS:
        for i in range(2):
            _jpeg(tmp_path / "val" / wnid / f"ILSVRC2012_val_{wnid[-4:]}{i}.JPEG")
    (tmp_path / "val" / "LOC_val_solution.csv").write_text("not an image")  # stray files are ignored
    return tmp_path


def test_labels_are_the_standard_indices_with_only_three_class_folders(val) -> None:
    data = load_dataset("imagenet", data_dir=val, input_transform=SMALL)
    x, y = to_tensors(data.dataset)
    assert y.tolist() == [0, 0, 1, 1, 999, 999]  # never 0, 1, 2: a plain ImageFolder's numbering
    assert data.name == "imagenet" and data.num_classes == 1000 and data.split == "val"
    assert data.input_shape == (3, 8, 8) and tuple(x.shape) == (6, 3, 8, 8)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # never normalized
    assert abs(float(x[0, 0].mean()) - 120 / 255) < 0.03  # decoded RGB, channel order kept
    assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)
    assert data.description == "imagenet val (6 images of 3 classes), resize 12 / crop 8 bilinear"
    # the val folder itself works too, with the same images and labels
    again = load_dataset("imagenet", data_dir=val / "val", input_transform=SMALL)
    assert torch.equal(to_tensors(again.dataset)[1], y) and "imagenet" in DATASET_NAMES


def test_imagenet_layout_alternatives_and_n(tmp_path) -> None:
    root = tmp_path / "data"
    for wnid in WNIDS:
        _jpeg(root / "imagenet" / "val" / wnid / "a.JPEG")
    data = load_dataset("imagenet", data_dir=root, input_transform=SMALL, n=2, seed=1)
    assert len(data) == 2 and {int(data.dataset[i][1]) for i in range(2)} <= set(WNIDS.values())


def test_default_transform_is_resize_256_crop_224(val) -> None:
    data = load_dataset("imagenet", data_dir=val)
    x, y = data.dataset[0]
    assert tuple(x.shape) == (3, 224, 224) and data.input_shape == (3, 224, 224) and y == 0
    assert data.description.endswith("resize 256 / crop 224 bilinear")


def test_resize_happens_before_the_center_crop(tmp_path) -> None:
    """64x32 image: red outside x in [16, 48), green inside, a blue 16x16 square at its center. Resizing the
    shorter side to 16 and cropping 16x16 keeps the whole 32x32 green square (blue in the middle, green at
    the edges); cropping first would keep only the blue center."""
    from PIL import Image

    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 255, 0), (16, 0, 48, 32))
    image.paste((0, 0, 255), (24, 8, 40, 24))
    path = tmp_path / "val" / "n01440764" / "a.JPEG"
    path.parent.mkdir(parents=True)
    image.save(path, quality=95)
    data = load_dataset("imagenet", data_dir=tmp_path, input_transform=InputTransform(size=(16, 16), resize=16))
    x, _ = data.dataset[0]
    assert tuple(x.shape) == (3, 16, 16)
    near_edge, center = x[:, 2, 2], x[:, 8, 8]
    assert near_edge[1] > 0.7 and near_edge[0] < 0.3 and near_edge[2] < 0.3  # green: resized first
    assert center[2] > 0.7 and center[1] < 0.3  # blue at the center


def _fake_ids(monkeypatch, tmp_path: Path, ids: list[str]) -> None:
    """RobustBench's ids file replaced by a short one (its class map stays the installed one)."""
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(ids) + "\n")
    real = imagenet_data._helper_file
    monkeypatch.setattr(imagenet_data, "_helper_file",
                        lambda name: listed if name == imagenet_data._IDS_FILE else real(name))


def test_robustbench_subset_picks_the_listed_images_in_order(val, tmp_path, monkeypatch) -> None:
    real = imagenet_data.robustbench_test_ids()
    assert len(real) == 5000 and real[0].count("/") == 1 and real[0].endswith(".JPEG")
    ids = ["n15075141/ILSVRC2012_val_00049999.JPEG", "n01440764/ILSVRC2012_val_00000293.JPEG",
           "n01443537/ILSVRC2012_val_00010000.JPEG"]
    _fake_ids(monkeypatch, tmp_path, ids)
    for listed in ids[:2]:
        _jpeg(val / "val" / listed, color=(10, 200, 10))
    with pytest.raises(InputError) as e:
        load_dataset("imagenet", data_dir=val, subset="robustbench", input_transform=SMALL)
    assert "1 of RobustBench's 3 ImageNet images are missing" in str(e.value)
    assert str(val / "val" / ids[2]) in str(e.value) and "--subset" in str(e.value)
    _jpeg(val / "val" / ids[2], color=(10, 200, 10))
    data = load_dataset("imagenet", data_dir=val, subset="robustbench", input_transform=SMALL)
    assert [p for p, _ in data.dataset.samples] == [str(val / "val" / i) for i in ids]  # the file's order
    assert to_tensors(data.dataset)[1].tolist() == [999, 0, 1]
    assert data.description == "imagenet val (RobustBench 3-image subset), resize 12 / crop 8 bilinear"


def test_missing_folder_shows_the_layout(tmp_path) -> None:
    with pytest.raises(InputError) as e:
        load_dataset("imagenet", data_dir=tmp_path / "nowhere")
    text = str(e.value)
    assert "does not exist" in text and "val/<wnid>/<image>.JPEG" in text and "n01440764" in text
    assert "--data-dir" in text
    (tmp_path / "flat" / "val").mkdir(parents=True)
    _jpeg(tmp_path / "flat" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(InputError, match="holds the images directly"):
        load_dataset("imagenet", data_dir=tmp_path / "flat")


def test_unknown_folder_is_an_error(val) -> None:
    _jpeg(val / "val" / "cats" / "a.JPEG")
    with pytest.raises(InputError, match="not ImageNet-1k classes: cats"):
        load_dataset("imagenet", data_dir=val)


def test_without_robustbench_all_1000_folders_are_required(val, monkeypatch) -> None:
    monkeypatch.setattr(imagenet_data, "_helper_file", lambda name: None)
    with pytest.raises(InputError) as e:
        load_dataset("imagenet", data_dir=val, input_transform=SMALL)
    assert "has 3 class folders" in str(e.value) and 'pip install -e ".[zoo]"' in str(e.value)
    with pytest.raises(InputError, match=r'pip install -e "\.\[zoo\]"'):
        load_dataset("imagenet", data_dir=val, subset="robustbench")
    numbered = val / "numbered" / "val"
    for i in range(1000):  # all 1000 folders, but "0".."999" would sort 0, 1, 10, 100, ...: refused
        (numbered / str(i)).mkdir(parents=True)
    _jpeg(numbered / "5" / "a.JPEG")
    with pytest.raises(InputError, match="not named by WordNet id"):
        load_dataset("imagenet", data_dir=numbered.parent)
    wnids = val / "wnids" / "val"
    for i in range(1000):  # 1000 WordNet-id folders: their sorted order is the standard one
        (wnids / f"n{i:08d}").mkdir(parents=True)
    _jpeg(wnids / "n00000007" / "a.JPEG")
    assert load_dataset("imagenet", data_dir=wnids.parent, input_transform=SMALL).dataset[0][1] == 7


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"split": "train"}, "validation set"),
    ({"subset": "all"}, "unknown ImageNet subset"),
    ({"input_transform": (224, 224)}, "InputTransform"),
])
def test_bad_arguments(val, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        load_dataset("imagenet", data_dir=val, **kwargs)


def test_transform_and_subset_belong_to_imagenet_only() -> None:
    with pytest.raises(InputError, match="imagenet source only"):
        load_dataset("digits", subset="robustbench")
    with pytest.raises(InputError, match="load_corruptions"):
        load_dataset("cifar10-c")


def test_undecodable_image_names_the_file(val) -> None:
    bad = val / "val" / "n01440764" / "zz_broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    data = load_dataset("imagenet", data_dir=val, input_transform=SMALL)
    index = [p for p, _ in data.dataset.samples].index(str(bad))
    with pytest.raises(InputError, match="zz_broken.JPEG"):
        data.dataset[index]
    assert torch.is_tensor(data.dataset[0][0])


def test_the_three_geometries_give_the_sizes_and_texts_they_say() -> None:
    from PIL import Image

    from robustness.errors import InputError
    from robustness.input_transform import InputTransform

    image = Image.new("RGB", (400, 300), (10, 20, 30))
    usual = InputTransform(size=(224, 224), resize=256)
    crop = InputTransform(size=(288, 288), resize=None, mode="crop")
    squash = InputTransform(size=(224, 160), resize=None, mode="resize", interpolation="bicubic")
    assert tuple(usual.torchvision()(image).shape) == (3, 224, 224)
    assert tuple(crop.torchvision()(image).shape) == (3, 288, 288)
    assert tuple(squash.torchvision()(image).shape) == (3, 224, 160)
    assert (usual.describe(), crop.describe(), squash.describe()) == (
        "resize 256 / crop 224 bilinear", "crop 288 (no resize)", "resize to 224x160 bicubic (no crop)")
    for t in (usual, crop, squash):
        assert InputTransform.from_dict(t.to_dict()) == t
    assert "mode" not in usual.to_dict()  # reports written before the modes read the same
    with pytest.raises(InputError, match="takes no resize"):
        InputTransform(size=(224, 224), resize=256, mode="crop")
    with pytest.raises(InputError, match="unknown input transform mode"):
        InputTransform(size=(224, 224), resize=256, mode="zoom")
    with pytest.raises(InputError, match="at least the crop size"):
        InputTransform(size=(224, 224), resize=None)
