"""What a user runs into loading data and models: data holding a few of the model's classes,
class and channel counts that disagree, NumPy arrays in a .pt file, NaN inputs, channels-last
arrays, split names on files, and image folders in grayscale, mixed modes or mixed sizes.

Every test writes its own small files (npz, pt, PNG) in ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustness import cli
from robustness.architectures import build_architecture
from robustness.datasets import load_dataset, to_tensors
from robustness.errors import InputError
from robustness.loading import DEFAULT_MODEL_PATH, load_model, save_checkpoint
from robustness.validation import check_batch

FAST = ["--n", "6", "--attacks", "fgsm", "--eps", "0,0.1", "--quiet", "--no-checks"]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits test inputs (N, 1, 8, 8) in [0, 1] and labels, as NumPy arrays."""
    x, y = to_tensors(load_dataset("digits", split="test").dataset)
    return x.numpy(), y.numpy()


def _evaluate(data: Path | str, out: Path, *extra: str, model: str = str(DEFAULT_MODEL_PATH)) -> int:
    return cli.main(["evaluate", "--model", model, "--data", str(data), "--out", str(out), *FAST, *extra])


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- 1. class counts


def test_data_with_a_few_classes_evaluates_the_models_own_classes(digits, tmp_path: Path, capsys) -> None:
    x, y = digits
    keep = y < 5
    np.savez(tmp_path / "few.npz", x=x[keep][:6], y=y[keep][:6])
    assert _evaluate(tmp_path / "few.npz", tmp_path / "out") == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["num_classes"] == 10
    # a plain state dict with --arch: the class count comes from the classifier's weights
    state = torch.load(DEFAULT_MODEL_PATH, weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "sd.pt")
    assert _evaluate(tmp_path / "few.npz", tmp_path / "out2", "--arch", "small-cnn", model=str(tmp_path / "sd.pt")) == 0
    assert json.loads((tmp_path / "out2" / "report.json").read_text())["num_classes"] == 10
    # a label the model does not have: one line naming both numbers
    np.savez(tmp_path / "bad.npz", x=x[:4], y=np.array([0, 1, 2, 12]))
    capsys.readouterr()
    assert _evaluate(tmp_path / "bad.npz", tmp_path / "out3", "--arch", "small-cnn", model=str(tmp_path / "sd.pt")) == 2
    err = _one_line_error(capsys)
    assert "labels up to 12" in err and "10 classes" in err


def test_checkpoint_without_recorded_classes_keeps_its_weights_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_architecture("small-cnn", width=4).eval()  # the architecture's default 10 classes
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, net, arch="small-cnn", arch_kwargs={"width": 4})  # num_classes not recorded
    loaded = load_model(str(path), min_classes=3, in_channels=1)  # data with labels 0..2
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net(x))
    with pytest.raises(InputError, match=r"labels up to 10 but the model .* has 10 classes"):
        load_model(str(path), min_classes=11)
    with pytest.raises(InputError, match=r"saved with num_classes=10 but num_classes=3 was requested: drop"):
        load_model(str(path), num_classes=3)


def test_state_dict_shapes_win_over_requested_counts_with_one_line_errors(tmp_path: Path) -> None:
    torch.save(build_architecture("small-cnn", width=4, num_classes=6).state_dict(), tmp_path / "sd.pt")
    loaded = load_model(str(tmp_path / "sd.pt"), arch="small-cnn", min_classes=2)
    with torch.no_grad():
        assert loaded.model(torch.rand(1, 1, 8, 8)).shape == (1, 6)
    with pytest.raises(InputError, match=r"weights in .* are for num_classes=6 but num_classes=10") as info:
        load_model(str(tmp_path / "sd.pt"), arch="small-cnn", num_classes=10)
    assert "size mismatch" not in str(info.value)
    with pytest.raises(InputError, match=r"in_channels=1 but in_channels=3 .*grayscale.*RGB") as info:
        load_model(str(tmp_path / "sd.pt"), arch="small-cnn", in_channels=3)
    assert "size mismatch" not in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- 3. messages


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_numpy_arrays_in_a_torch_file_get_one_line(digits, tmp_path: Path, suffix: str, capsys) -> None:
    x, y = digits
    path = tmp_path / f"np{suffix}"
    torch.save({"x": x[:4], "y": y[:4]}, path)
    with pytest.raises(InputError, match=r"NumPy arrays.*torch tensors.*\.npz") as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value) and "weights_only" in str(info.value)
    assert _evaluate(path, tmp_path / "out") == 2
    assert "torch tensors" in _one_line_error(capsys)


def test_nan_inputs_are_named_as_such(digits, tmp_path: Path, capsys) -> None:
    x, y = digits
    bad = x[:4].copy()
    bad[1, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=y[:4])
    assert _evaluate(tmp_path / "nan.npz", tmp_path / "out") == 2
    err = _one_line_error(capsys)
    assert "NaN or inf" in err and "outside" not in err and "255" not in err
    for value in (float("nan"), float("inf")):
        batch = torch.from_numpy(x[:4].copy())
        batch[0, 0, 0, 0] = value
        with pytest.raises(InputError, match="NaN or inf") as info:
            check_batch(batch, torch.from_numpy(y[:4]), (0.0, 1.0), 0)
        assert "outside" not in str(info.value)


def test_channels_last_data_gets_a_transpose_hint(digits, tmp_path: Path, capsys) -> None:
    x, y = digits
    np.savez(tmp_path / "hwc.npz", x=x[:4].transpose(0, 2, 3, 1), y=y[:4])  # (N, 8, 8, 1)
    assert _evaluate(tmp_path / "hwc.npz", tmp_path / "out") == 2
    err = _one_line_error(capsys)
    assert "channels-last" in err and "(N, C, H, W)" in err
    # the same mistake reaching the model loader (data built in memory) gets the same hint
    with pytest.raises(InputError, match=r"in_channels=8 was requested.*channels-last.*\(N, C, H, W\)"):
        load_model(str(DEFAULT_MODEL_PATH), in_channels=8)


def test_files_have_no_split(digits, tmp_path: Path) -> None:
    x, y = digits
    np.savez(tmp_path / "ok.npz", x=x[:6], y=y[:6])
    for split in ("train", "test"):
        data = load_dataset(str(tmp_path / "ok.npz"), split=split)
        assert data.split is None and "train" not in data.name and len(data) == 6
    assert load_dataset("digits", split="train").split == "train"
    assert load_dataset("digits").split == "test"


# ----------------------------------------------------------------------------- 4. image folders


def _image_folder(root: Path, digits, modes: dict[int, str], sizes: dict[int, tuple[int, int]] | None = None) -> Path:
    """PNG files ``root/<class>/<i>.png`` of real digits, class ``c`` saved in ``modes[c]``."""
    from PIL import Image

    x, y = digits
    for c, mode in modes.items():
        (root / str(c)).mkdir(parents=True)
        for i, pixels in enumerate(x[y == c][:2, 0]):
            image = Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").convert(mode)
            if sizes and c in sizes:
                image = image.resize(sizes[c])
            image.save(root / str(c) / f"{i}.png")
    return root


def test_grayscale_image_folder_feeds_a_one_channel_model(digits, tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "gray", digits, {0: "L", 1: "L", 2: "L"})
    data = load_dataset(f"imagefolder:{root}")
    assert data.input_shape == (1, 8, 8) and data.split is None
    assert _evaluate(f"imagefolder:{root}", tmp_path / "out") == 0


def test_color_images_are_never_made_gray_silently(digits, tmp_path: Path, capsys) -> None:
    root = _image_folder(tmp_path / "mixed", digits, {0: "L", 1: "RGB"})
    assert _evaluate(f"imagefolder:{root}", tmp_path / "out") == 2
    err = _one_line_error(capsys)
    assert "mixes grayscale and color" in err and "RGB" in err and ".convert('L')" in err
    # an RGB folder for a grayscale model: the error says the images are RGB and how to get 1 channel
    rgb = _image_folder(tmp_path / "rgb", digits, {0: "RGB", 1: "RGB"})
    assert _evaluate(f"imagefolder:{rgb}", tmp_path / "out2") == 2
    err = _one_line_error(capsys)
    assert "RGB" in err and ".convert('L')" in err


def test_image_folder_of_mixed_sizes_names_two_sizes(digits, tmp_path: Path, capsys) -> None:
    root = _image_folder(tmp_path / "sizes", digits, {0: "L", 1: "L"}, sizes={1: (9, 8)})
    assert _evaluate(f"imagefolder:{root}", tmp_path / "out") == 2
    err = _one_line_error(capsys)
    assert "differ in size" in err and "8x8" in err and "9x8" in err


# ----------------------------------------------------------------------------- 5. silent wrong answers


def _report_model(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())["model"]


def test_data_of_another_size_than_the_checkpoint_records_is_refused(digits, tmp_path: Path, capsys) -> None:
    x, y = digits
    big = np.repeat(np.repeat(x[:6], 2, axis=2), 2, axis=3)  # 16x16: the shipped CNN would run on it
    np.savez(tmp_path / "big.npz", x=big, y=y[:6])
    assert _evaluate(tmp_path / "big.npz", tmp_path / "out") == 2
    err = _one_line_error(capsys)
    assert "1x8x8" in err and "1x16x16" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_boolean_labels_are_refused_not_taken_as_0_1(digits, tmp_path: Path, suffix: str, capsys) -> None:
    x, y = digits
    path = tmp_path / f"bool{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x[:6], y=y[:6] > 4)
    else:
        torch.save({"x": torch.from_numpy(x[:6]), "y": torch.from_numpy(y[:6] > 4)}, path)
    with pytest.raises(InputError, match="booleans, not class labels.*integer class indices"):
        load_dataset(str(path))
    assert _evaluate(path, tmp_path / "out") == 2
    assert "booleans" in _one_line_error(capsys)
    with pytest.raises(InputError, match="labels of batch 0 are booleans"):
        check_batch(torch.from_numpy(x[:2]), torch.tensor([True, False]), (0.0, 1.0), 0)


def test_every_report_records_the_weights_and_normalization(digits, tmp_path: Path, capsys) -> None:
    x, y = digits
    np.savez(tmp_path / "d.npz", x=x[:6], y=y[:6])
    assert _evaluate(tmp_path / "d.npz", tmp_path / "shipped") == 0
    shipped = _report_model(tmp_path / "shipped")
    recorded = torch.load(DEFAULT_MODEL_PATH, weights_only=True)
    assert shipped["normalization"] == {"mean": recorded["mean"], "std": recorded["std"]}
    assert shipped["weights_sha256"] == recorded["weights_sha256"] and shipped["initial_weights"] is False
    md = (tmp_path / "shipped" / "report.md").read_text()
    assert f"SHA-256 {recorded['weights_sha256']}" in md and f"normalization: mean {recorded['mean']}" in md
    # the same weights as a plain state dict, without --mean/--std: a visible warning, and "none" recorded
    torch.save(recorded["state_dict"], tmp_path / "sd.pt")
    capsys.readouterr()
    assert _evaluate(tmp_path / "d.npz", tmp_path / "plain", "--arch", "small-cnn", model=str(tmp_path / "sd.pt")) == 0
    assert "warning: " in capsys.readouterr().err and "without normalization" in (
        tmp_path / "plain" / "report.md").read_text()
    plain = _report_model(tmp_path / "plain")
    assert plain["normalization"] is None and plain["weights_sha256"] == shipped["weights_sha256"]
    assert "normalization: none" in (tmp_path / "plain" / "report.md").read_text()


def test_an_untrained_torchvision_model_is_flagged_and_its_trained_state_dict_loads(tmp_path: Path, capsys) -> None:
    from torchvision import models

    torch.save({"x": torch.rand(6, 3, 32, 32), "y": torch.arange(6)}, tmp_path / "rgb.pt")
    spec = "torchvision:shufflenet_v2_x0_5"
    assert _evaluate(tmp_path / "rgb.pt", tmp_path / "untrained", "--weights", "none", model=spec) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.out and "warning: the model has its initial random weights" in captured.err
    block = _report_model(tmp_path / "untrained")
    assert block["initial_weights"] is True and block["source"] == spec
    assert "initial random weights: **yes**" in (tmp_path / "untrained" / "report.md").read_text()

    torch.manual_seed(0)
    net = models.shufflenet_v2_x0_5(num_classes=10).train()
    with torch.no_grad():
        net(torch.rand(4, 3, 32, 32))  # BatchNorm statistics move, as in training
    torch.save(net.state_dict(), tmp_path / "tv.pt")
    assert _evaluate(tmp_path / "rgb.pt", tmp_path / "trained", "--arch", spec, "--mean", "0.5,0.5,0.5", "--std",
                     "0.25,0.25,0.25", model=str(tmp_path / "tv.pt")) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" not in captured.out and "warning" not in captured.err
    block = _report_model(tmp_path / "trained")
    assert block["initial_weights"] is False and block["arch"] == spec
    assert block["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
