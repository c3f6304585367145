"""robustness.corruptions, robustness.corruption_report and `robustness evaluate --data cifar10-c`: files in
the real layouts written into tmp_path, and a model whose accuracy is known by construction."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustness import cli
from robustness.cli.corruptions import corruption_request
from robustness.corruption_report import CorruptionReport, evaluate_corruptions
from robustness.corruptions import CORRUPTIONS, NpyRows, load_corruptions
from robustness.datasets import TensorPairDataset
from robustness.errors import InputError, RobustnessWarning

N = 8  # images per severity
NAMES = ("fog", "snow", "contrast")
STEP = 20  # a pixel value of STEP * k encodes the prediction k


class PixelClassifier(nn.Module):
    """Predicts the class written into the red value of the top-left pixel (``STEP * class``), with a
    BatchNorm whose running statistics change if it ever runs in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.round(x[:, 0, 0, 0] * 255.0 / STEP).long().clamp(0, 9)
        return nn.functional.one_hot(k, 10).float() * self.scale + 0.0 * self.bn(x).mean()


def _write_cifar_c(root: Path, names=NAMES, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-10-C in RobustBench's layout: DIR/CIFAR-10-C/<corruption>.npy (5*N, 32, 32, 3) uint8 + labels.npy.
    Returns the predicted class of every row per corruption (the model reads it back)."""
    rng = np.random.default_rng(seed)
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    labels = np.tile(rng.integers(0, 10, N), 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    predictions = {}
    for name in names:
        images = rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8)
        right = rng.random(5 * N) < np.repeat(np.linspace(0.9, 0.2, 5), N)  # worse at higher severities
        pred = np.where(right, labels, (labels + 1) % 10)
        images[:, 0, 0, 0] = pred * STEP
        np.save(folder / f"{name}.npy", images)
        predictions[name] = pred
    return predictions


@pytest.fixture()
def cifar_c(tmp_path):
    return tmp_path, _write_cifar_c(tmp_path)


def _direct(pred: np.ndarray, labels: np.ndarray, severity: int, rows: np.ndarray | None = None) -> float:
    idx = (np.arange(N) if rows is None else rows) + (severity - 1) * N
    return float((pred[idx] == labels[idx]).mean())


def test_accuracy_per_severity_equals_a_direct_computation(cifar_c) -> None:
    root, preds = cifar_c
    labels = np.load(root / "CIFAR-10-C" / "labels.npy")
    data = load_corruptions("cifar10-c", data_dir=root, corruptions=list(NAMES))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10 and len(data) == N
    model = PixelClassifier().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RobustnessWarning) as record:
        report = evaluate_corruptions(model, data, batch_size=3)
    said = " | ".join(str(w.message) for w in record)
    assert "3 of the 15 standard corruptions" in said and "initial random weights" in said  # BatchNorm untouched
    assert report.warnings == [str(w.message) for w in record]
    for name in NAMES:
        for s in range(1, 6):
            assert report.accuracy[name][s] == pytest.approx(_direct(preds[name], labels, s))
    for s in range(1, 6):
        assert report.per_severity[s] == pytest.approx(np.mean([_direct(preds[c], labels, s) for c in NAMES]))
    overall = np.mean([_direct(preds[c], labels, s) for c in NAMES for s in range(1, 6)])
    assert report.mean_accuracy == pytest.approx(overall)
    means = {c: np.mean([_direct(preds[c], labels, s) for s in range(1, 6)]) for c in NAMES}
    assert report.worst_corruption == min(means, key=means.get)
    assert report.clean_accuracy is None and "not measured" in report.clean_note
    # the model comes back as it was: train mode, parameters and BatchNorm statistics untouched
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_n_picks_the_same_images_for_every_corruption_and_severity(cifar_c) -> None:
    root, _ = cifar_c
    data = load_corruptions("cifar10-c", data_dir=root / "CIFAR-10-C", corruptions=["snow", "fog"],
                            severities=[2, 5], n=5, seed=3)
    expected = np.random.default_rng(3).permutation(N)[:5].tolist()  # as load_dataset's n= picks
    assert data.indices == expected and len(data) == 5 and data.severities == (2, 5)
    raw = {c: np.load(root / "CIFAR-10-C" / f"{c}.npy") for c in ("snow", "fog")}
    for c, s in data.pairs():
        ds = data.dataset(c, s)
        assert isinstance(ds, NpyRows) and ds.rows.tolist() == [i + (s - 1) * N for i in expected]
        x, y = ds.batch(0, len(ds))
        want = torch.from_numpy(raw[c][[i + (s - 1) * N for i in expected]]).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(x, want) and torch.equal(x[2], ds[2][0]) and int(y[2]) == ds[2][1]
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(data.labels(), torch.from_numpy(np.load(root / "CIFAR-10-C" / "labels.npy")[expected]).long())
    other = load_corruptions("cifar10-c", data_dir=root, corruptions=["snow"], n=5, seed=4)
    assert other.indices != expected


def test_missing_corruption_lists_the_files_and_the_flag(cifar_c) -> None:
    root, _ = cifar_c
    with pytest.raises(InputError) as e:
        load_corruptions("cifar10-c", data_dir=root)
    text = str(e.value)
    assert "12 corruption files missing" in text and "gaussian_noise.npy" in text and "jpeg_compression.npy" in text
    assert "fog.npy" not in text and "--corruptions" in text
    with pytest.raises(InputError, match=r"CIFAR-10-C/<corruption>\.npy"):
        load_corruptions("cifar10-c", data_dir=root / "nowhere", corruptions=["fog"])
    with pytest.raises(InputError, match="levels from 1 to 5"):
        load_corruptions("cifar10-c", data_dir=root, corruptions=["fog"], severities=[0, 1])
    np.save(root / "CIFAR-10-C" / "frost.npy", np.zeros((5 * N, 32, 32), dtype=np.uint8))
    with pytest.raises(InputError, match="frost.npy holds uint8 of shape"):
        load_corruptions("cifar10-c", data_dir=root, corruptions=["fog", "frost"])
    np.save(root / "CIFAR-10-C" / "glass_blur.npy", np.array([object()], dtype=object))
    with pytest.raises(InputError, match="could not read"):  # pickled objects are never loaded
        load_corruptions("cifar10-c", data_dir=root, corruptions=["glass_blur"])


def test_report_saves_and_reads_back_with_clean_accuracy(cifar_c, tmp_path) -> None:
    root, preds = cifar_c
    data = load_corruptions("cifar10-c", data_dir=root, corruptions=["fog"], severities=[1, 5], n=6, seed=1)
    clean_x = torch.zeros(6, 3, 32, 32)
    labels = data.labels()
    clean_x[:, 0, 0, 0] = ((labels + torch.tensor([0, 0, 0, 0, 1, 1])) % 10).float() * STEP / 255  # 4 of 6 right
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobustnessWarning)
        report = evaluate_corruptions(PixelClassifier(), data, clean=TensorPairDataset(clean_x, labels))
    assert report.clean_accuracy == pytest.approx(4 / 6) and report.n_examples == 6
    out = report.save(tmp_path / "rep")
    saved = json.loads((out / "report.json").read_text())
    assert saved["kind"] == "corruptions" and saved["severities"] == [1, 5]
    assert saved["mean_accuracy"] == pytest.approx(report.mean_accuracy)
    assert set(saved) >= {"model", "data", "versions", "seed", "device", "timings", "warnings"}
    assert saved["model"]["weights_sha256"] and "3 of the 15" not in " ".join(saved["warnings"])
    back = CorruptionReport.from_dict(saved)
    assert back.to_dict() == report.to_dict()
    md = (out / "report.md").read_text()
    assert "## Accuracy per severity" in md and "| fog |" in md and "| **mean** |" in md
    assert (out / "accuracy_per_severity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not a corruption report"):
        CorruptionReport.from_dict({**saved, "kind": None})


def _model_file(tmp_path: Path) -> str:
    """The model as `--model` takes a factory (this module is importable: tests/ is a package)."""
    return f"{__name__}:PixelClassifier"


def test_cli_end_to_end_writes_the_corruption_report(cifar_c, tmp_path, capsys) -> None:
    root, preds = cifar_c
    out = tmp_path / "out"
    argv = ["evaluate", "--model", _model_file(tmp_path), "--data", "cifar10-c", "--data-dir", str(root),
            "--corruptions", "fog,snow", "--severities", "1,3,5", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| corruption | severity 1 | severity 3 | severity 5 | mean |" in printed and "mean corruption" in printed
    saved = json.loads((out / "report.json").read_text())
    labels = np.load(root / "CIFAR-10-C" / "labels.npy")
    assert saved["kind"] == "corruptions" and saved["corruptions"] == ["fog", "snow"]
    assert saved["accuracy"]["snow"]["3"] == pytest.approx(_direct(preds["snow"], labels, 3))
    assert "not measured" in saved["clean_note"] and saved["model"]["source"].endswith(":PixelClassifier")
    assert (out / "report.md").is_file() and (out / "accuracy_per_severity.png").is_file()
    # --min-accuracy gates the mean corruption accuracy
    assert cli.main([*argv, "--quiet", "--min-accuracy", "0.99"]) == 1
    assert "FAILED --min-accuracy 0.99" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "message"), [
    (["--attacks", "fgsm"], "--attacks: --data cifar10-c evaluates accuracy per corruption"),
    (["--eps", "0,8/255"], "--eps"),
    (["--norm", "l2"], "--norm"),
    (["--severities", "1,6"], "outside 1..5"),
    (["--corruptions", "fog,,snow"], "empty item"),
])
def test_cli_refuses_attack_flags_with_corruptions(cifar_c, tmp_path, capsys, extra, message) -> None:
    root, _ = cifar_c
    argv = ["evaluate", "--model", _model_file(tmp_path), "--data", "cifar10-c", "--data-dir", str(root),
            "--corruptions", "fog", "--out", str(tmp_path / "out"), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


class _FakeCifarTest(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 test set gives: items (x, label) and .targets; x encodes ``predicted``."""

    def __init__(self, labels: np.ndarray, predicted: np.ndarray) -> None:
        self.targets = [int(v) for v in labels]
        self.predicted = predicted

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = torch.zeros(3, 32, 32)
        x[0, 0, 0] = float(self.predicted[i]) * STEP / 255
        return x, self.targets[i]


def test_cli_measures_clean_accuracy_on_the_same_images(cifar_c, tmp_path, monkeypatch, capsys) -> None:
    from robustness import datasets

    root, _ = cifar_c
    labels = np.load(root / "CIFAR-10-C" / "labels.npy")[:N]
    predicted = labels.copy()
    predicted[[1, 6]] = (labels[[1, 6]] + 1) % 10  # images 1 and 6 wrong
    seen = []

    def fake(name, **kwargs):
        seen.append((name, kwargs["data_dir"]))
        if name != "cifar10" or kwargs["data_dir"] != root:
            raise InputError("not here")
        return datasets.LoadedData(name="cifar10", dataset=_FakeCifarTest(labels, predicted), num_classes=10,
                                   input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, split="test")

    monkeypatch.setattr(datasets, "load_dataset", fake)
    argv = ["evaluate", "--model", _model_file(tmp_path), "--data", "cifar10-c", "--data-dir", str(root),
            "--corruptions", "fog", "--severities", "2", "--n", "4", "--seed", "5", "--quiet", "--out",
            str(tmp_path / "out")]
    assert cli.main(argv) == 0
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    picked = np.random.default_rng(5).permutation(N)[:4]
    assert saved["clean_accuracy"] == pytest.approx(float((predicted[picked] == labels[picked]).mean()))
    assert f"cifar10 test set in {root}, the same 4 images" == saved["clean_note"] and seen[0] == ("cifar10", root)
    # a clean test set whose labels differ is not the same images: refused, not measured
    predicted_labels = (labels + 1) % 10
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: datasets.LoadedData(
        name="cifar10", dataset=_FakeCifarTest(predicted_labels, predicted), num_classes=10,
        input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, split="test"))
    assert cli.main(argv) == 0
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["clean_accuracy"] is None and "labels of the cifar10 test set" in saved["clean_note"]


def test_threat_model_corruptions_maps_the_clean_data(capsys, tmp_path) -> None:
    def ask(data: str, threat: str | None) -> str | None:
        return corruption_request(argparse.Namespace(data=data, threat_model=threat))

    assert ask("cifar10", "corruptions") == "cifar10-c" and ask("CIFAR-100", "corruptions") == "cifar100-c"
    assert ask("imagenet", "Corruptions") == "imagenet-c" and ask("cifar10-c", "Linf") == "cifar10-c"
    assert ask("cifar10", "Linf") is None and ask("CIFAR-10-C", None) == "cifar10-c"
    with pytest.raises(InputError, match="--threat-model corruptions needs corruption data"):
        ask("digits", "corruptions")
    assert cli.main(["evaluate", "--severities", "1", "--out", str(tmp_path)]) == 2  # no corruption data
    assert "--severities applies to corruption data only" in capsys.readouterr().err


def test_imagenet_c_folder_layout(tmp_path) -> None:
    from PIL import Image

    from robustness.input_transform import InputTransform

    root = tmp_path / "ImageNet-C"
    for corruption in ("fog", "snow"):
        for wnid, value in (("n01440764", 10), ("n15075141", 200)):
            folder = root / corruption / "3" / wnid
            folder.mkdir(parents=True)
            Image.new("RGB", (24, 24), (value, value, value)).save(folder / "ILSVRC2012_val_00000001.JPEG")
    data = load_corruptions("imagenet-c", data_dir=tmp_path, corruptions=["fog", "snow"], severities=[3],
                            input_transform=InputTransform(size=(8, 8), resize=12))
    assert data.num_classes == 1000 and data.input_shape == (3, 8, 8) and len(data) == 2
    assert data.input_transform.mode == "resize" and data.input_transform.size == (8, 8)  # no second crop
    assert data.labels().tolist() == [0, 999]  # standard ImageNet-1k indices
    x, y = data.dataset("snow", 3)[1]
    assert tuple(x.shape) == (3, 8, 8) and y == 999 and abs(float(x.mean()) - 200 / 255) < 0.05
    # the clean accuracy: the validation images of the same names, with the model's resize/crop
    clean, note = data.clean()
    assert clean is None and note.startswith("not measured: no ImageNet validation folder")
    for wnid, value in (("n01440764", 30), ("n15075141", 90)):
        folder = tmp_path / "val" / wnid
        folder.mkdir(parents=True)
        Image.new("RGB", (40, 30), (value, value, value)).save(folder / "ILSVRC2012_val_00000001.JPEG")
    clean, note = data.clean()
    assert len(clean) == 2 and "the same 2 images, resize 12 / crop 8 bilinear" in note
    xc, yc = clean[1]
    assert tuple(xc.shape) == (3, 8, 8) and yc == 999 and abs(float(xc.mean()) - 90 / 255) < 0.05
    (tmp_path / "val" / "n15075141" / "ILSVRC2012_val_00000001.JPEG").unlink()
    clean, note = data.clean()
    assert clean is None and "1 of the 2 evaluated images are not in" in note
    with pytest.raises(InputError, match="snow/1"):
        load_corruptions("imagenet-c", data_dir=root, corruptions=["fog", "snow"], severities=[1, 3])
    (root / "snow" / "3" / "n15075141" / "ILSVRC2012_val_00000001.JPEG").rename(
        root / "snow" / "3" / "n15075141" / "other.JPEG")
    with pytest.raises(InputError, match="does not hold the same images"):
        load_corruptions("imagenet-c", data_dir=root, corruptions=["fog", "snow"], severities=[3])


def test_the_default_corruptions_are_the_fifteen_standard_ones() -> None:
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert {"gaussian_noise", "jpeg_compression", "elastic_transform", "glass_blur"} <= set(CORRUPTIONS)


def test_cifar100_c_and_labels_of_the_wrong_data_set(tmp_path) -> None:
    folder = tmp_path / "CIFAR-100-C"
    folder.mkdir()
    labels = np.arange(50, dtype=np.uint8) * 2  # labels up to 98: CIFAR-100's
    np.save(folder / "labels.npy", labels)
    np.save(folder / "fog.npy", np.zeros((50, 32, 32, 3), dtype=np.uint8))  # 5 severities x 10 images
    data = load_corruptions("CIFAR-100-C", data_dir=tmp_path, corruptions=["fog"], severities=[4])
    assert data.name == "cifar100-c" and data.num_classes == 100 and data.total == 10
    assert data.labels().tolist() == labels[30:40].tolist()  # severity 4: rows 30..39
    with pytest.raises(InputError, match=r"labels outside 0\.\.9: is it CIFAR-10-C's"):
        load_corruptions("cifar10-c", data_dir=folder, corruptions=["fog"])


def test_published_corruption_accuracy_beside_ours_and_the_robustbench_entry(cifar_c, tmp_path, capsys) -> None:
    from robustness.cli.corruptions import _evaluate_corruptions  # noqa: F401 - the path the CLI takes
    from robustness.leaderboard_entry import corruptions_entry, write_robustbench
    from robustness.model_info import ModelInfo

    root, preds = cifar_c
    data = load_corruptions("cifar10-c", data_dir=root, corruptions=["fog", "snow"], severities=[1, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobustnessWarning)
        report = evaluate_corruptions(PixelClassifier(), data)
    report.data = "cifar10-c"
    claims = {"source": "RobustBench leaderboard (test)", "metric": "corruptions_acc", "clean_accuracy": 0.9478,
              "robust_accuracy": 0.7346, "norm": None, "eps": None, "dataset": "cifar10"}
    report.model = ModelInfo(source="robustbench:Standard", name="Standard", claims=claims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobustnessWarning)
        report.set_published()
    block = report.published
    assert block["comparable"] is True and block["robust"]["measured"] == pytest.approx(report.mean_accuracy)
    assert block["robust"]["difference"] == pytest.approx(100 * (report.mean_accuracy - 0.7346), abs=0.01)
    assert block["clean"]["measured"] is None and block["clean"]["difference"] is None  # no clean set given
    md = report.to_markdown()
    assert "## Published vs measured" in md and "| mean accuracy under corruptions |" in md
    back = CorruptionReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back.published == block
    # the same claims on other data are set beside ours but marked not comparable, with one warning
    report.data = "my-images.npz"
    with pytest.warns(RobustnessWarning, match="compare different images"):
        report.set_published()
    assert report.published["comparable"] is False and "**Not comparable**" in report.to_markdown()
    # RobustBench's corruptions entry: the mean accuracy, a footnote for every way this run is not the protocol
    entry, problems = corruptions_entry(report)
    assert entry["corruptions_acc"] == f"{100 * report.mean_accuracy:.2f}" and entry["dataset"] == "cifar10"
    assert entry["eps"] is None and entry["clean_acc"] is None
    assert any("13 of RobustBench's 15 corruptions" in p for p in problems)
    assert any("severities 1,5" in p for p in problems) and any("fewer than the leaderboard's 10,000" in p
                                                                 for p in problems)
    assert entry["footnote"].startswith("Not RobustBench's protocol")
    path, _ = write_robustbench(report, tmp_path / "rb")
    assert json.loads(path.read_text())["corruptions_acc"] == entry["corruptions_acc"]


def test_cli_format_robustbench_writes_the_corruptions_entry(cifar_c, tmp_path, capsys) -> None:
    root, _ = cifar_c
    out = tmp_path / "out"
    argv = ["evaluate", "--model", _model_file(tmp_path), "--data", "cifar10-c", "--data-dir", str(root),
            "--corruptions", "fog,snow", "--device", "cpu", "--out", str(out), "--format", "robustbench"]
    assert cli.main(argv) == 0
    entry = json.loads((out / "robustbench.json").read_text())
    saved = json.loads((out / "report.json").read_text())
    assert entry["corruptions_acc"] == f"{100 * saved['mean_accuracy']:.2f}"
    assert "not the leaderboard protocol" in capsys.readouterr().out
