"""``robustness evaluate --model timm:NAME / torchvision:NAME``: offline end to end on a few images at the model's
input size, the one-line errors, the flags that describe a source model, and the imagenet loading order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustness import cli, datasets
from robustness.input_transform import InputTransform
from tests.robustness.hub_cache import (TIMM_NAME, TORCHVISION_NAME, offline_hubs, timm_net, timm_resize,
                                        torchvision_net, write_timm_cache, write_torchvision_cache)

FAST = ["--attacks", "fgsm", "--eps", "0,0.01", "--quiet", "--no-checks", "--device", "cpu"]


@pytest.fixture()
def hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return offline_hubs(tmp_path, monkeypatch)


def _images(path: Path, size: int, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n, 3, size, size), dtype=np.float32), y=np.arange(n))
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_cached_timm_model_evaluates_end_to_end_and_its_report_says_what_it_is(hubs, tmp_path: Path) -> None:
    write_timm_cache(hubs, timm_net(seed=5))
    data = _images(tmp_path / "x160.npz", 160)
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--model", f"timm:{TIMM_NAME}", "--data", str(data), "--out", str(out), *FAST]) == 0
    model = json.loads((out / "report.json").read_text())["model"]
    assert model["source"] == f"timm:{TIMM_NAME}" and model["name"] == TIMM_NAME and model["arch"] == "timm:test_vit"
    assert model["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert model["input_transform"] == {"size": [160, 160], "resize": timm_resize(), "interpolation": "bicubic"}
    assert model["input_shape"] == [3, 160, 160] and "file SHA-256" in model["weights"]


def test_a_cached_torchvision_model_evaluates_and_the_hash_warning_reaches_the_report(hubs, tmp_path: Path,
                                                                                      capsys) -> None:
    write_torchvision_cache(hubs, torchvision_net(seed=6))
    data = _images(tmp_path / "x224.npz", 224, n=2)
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--model", f"torchvision:{TORCHVISION_NAME}", "--data", str(data), "--out", str(out),
                     *FAST]) == 0
    assert "not the published" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    model = report["model"]
    assert model["name"] == TORCHVISION_NAME and model["source"] == f"torchvision:{TORCHVISION_NAME}"
    assert model["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert model["input_transform"] == {"size": [224, 224], "resize": 256, "interpolation": "bilinear"}
    assert model["claims"]["clean_accuracy"] == pytest.approx(0.58178)
    assert any("not the published" in w for w in report["warnings"])


def test_missing_weights_offline_exit_2_with_one_line(hubs, tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "x160.npz", 160, n=2)
    code = cli.main(["evaluate", "--model", "timm:test_efficientnet.r160_in1k", "--data", str(data),
                     "--out", str(tmp_path / "a"), *FAST])
    assert code == 2
    err = _one_line(capsys)
    assert "--model" in err and "HF_HUB_OFFLINE" in err and "models--timm--test_efficientnet.r160_in1k" in err
    code = cli.main(["evaluate", "--model", "torchvision:mobilenet_v3_small", "--data", str(data),
                     "--out", str(tmp_path / "b"), *FAST])
    assert code == 2
    assert "mobilenet_v3_small-047dcff4.pth" in _one_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_data_of_another_size_than_the_weights_declare_is_refused(hubs, tmp_path: Path, capsys) -> None:
    write_timm_cache(hubs, timm_net())
    data = _images(tmp_path / "x32.npz", 32, n=2)
    assert cli.main(["evaluate", "--model", f"timm:{TIMM_NAME}", "--data", str(data), "--out", str(tmp_path / "o"),
                     *FAST]) == 2
    err = _one_line(capsys)
    assert "3x160x160" in err and "3x32x32" in err


def test_arch_timm_with_a_state_dict_and_the_wrong_normalization_warning(hubs, tmp_path: Path, capsys) -> None:
    import timm

    torch.manual_seed(7)
    torch.save(timm.create_model("test_vit", pretrained=False, num_classes=3).state_dict(), tmp_path / "mine.pt")
    data = _images(tmp_path / "x160.npz", 160)
    out = tmp_path / "mine"
    assert cli.main(["evaluate", "--model", str(tmp_path / "mine.pt"), "--arch", "timm:test_vit", "--data", str(data),
                     "--out", str(out), *FAST]) == 0
    assert "weights declare --mean 0.5,0.5,0.5" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["model"]["arch"] == "timm:test_vit"

    write_timm_cache(hubs, timm_net())
    out = tmp_path / "wrong"
    assert cli.main(["evaluate", "--model", f"timm:{TIMM_NAME}", "--mean", "0.4,0.4,0.4", "--std", "0.2,0.2,0.2",
                     "--data", str(data), "--out", str(out), *FAST]) == 0
    assert "another normalization than its weights declare" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["normalization"] == {"mean": [0.4] * 3, "std": [0.2] * 3}
    assert any("another normalization" in w for w in report["warnings"])


@pytest.mark.parametrize(("flags", "named"), [
    (["--model", f"timm:{TIMM_NAME}", "--weights", "DEFAULT"], "--weights"),
    (["--model", f"timm:{TIMM_NAME}", "--threat-model", "Linf"], "--threat-model"),
    (["--model", f"torchvision:{TORCHVISION_NAME}", "--model-dir", "models"], "--model-dir"),
    (["--model", f"timm:{TIMM_NAME}", "--subset", "robustbench"], "--subset"),
    (["--model", f"timm:{TIMM_NAME}", "--arch", "timm:test_vit"], "--arch"),
])
def test_flags_for_another_kind_of_model_exit_2_naming_the_flag(hubs, tmp_path: Path, capsys, flags: list[str],
                                                               named: str) -> None:
    data = _images(tmp_path / "x160.npz", 160, n=2)
    assert cli.main(["evaluate", *flags, "--data", str(data), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert named in _one_line(capsys)


def test_imagenet_data_is_loaded_after_the_model_with_its_input_transform(hubs, tmp_path: Path) -> None:
    """The real imagenet source over JPEGs in the ILSVRC2012 val layout: the images come out at the size the
    timm weights declare (160, resized to 160 / crop_pct then cropped), labelled with the standard ImageNet indices."""
    from PIL import Image

    write_timm_cache(hubs, timm_net())
    for wnid, color in (("n01440764", (200, 10, 10)), ("n15075141", (10, 200, 10))):  # ImageNet classes 0 and 999
        folder = tmp_path / "imagenet" / "val" / wnid
        folder.mkdir(parents=True)
        Image.new("RGB", (300, 240), color).save(folder / f"ILSVRC2012_val_{wnid[-4:]}.JPEG", quality=95)
    out = tmp_path / "o"
    assert cli.main(["evaluate", "--model", f"timm:{TIMM_NAME}", "--data", "imagenet", "--data-dir",
                     str(tmp_path / "imagenet"), "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == f"imagenet val (2 images of 2 classes), resize {timm_resize()} / crop 160 bicubic"
    assert report["n_examples"] == 2
    assert sorted(report["per_sample"]["label"]) == [0, 999]
    assert report["model"]["input_transform"] == {"size": [160, 160], "resize": timm_resize(), "interpolation": "bicubic"}
    data = datasets.load_dataset("imagenet", data_dir=tmp_path / "imagenet",
                                 input_transform=InputTransform(size=(160, 160), resize=timm_resize(), interpolation="bicubic"))
    assert tuple(data.dataset[0][0].shape) == (3, 160, 160)
