"""The ``robustbench:NAME`` model source, offline: what RobustBench's cache would hold, read by its real code.

The model file is a real RobustBench architecture (``Wong2020Fast``: PreActResNet-18 built through
robustbench's model dict) holding this test's own small random weights, with BatchNorm statistics
perturbed so that it does not look untrained, saved where RobustBench looks for it
(``<model_dir>/cifar10/Linf/Wong2020Fast.pt``). No test touches the network: downloads meet a socket
that refuses at once.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import socket
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from robustness.errors import InputError
from robustness.input_transform import InputTransform
from robustness.integrity import weights_sha256
from robustness.model import NormalizedModel
from robustness.report import Report
from robustness.sources import SourceOptions, load_from_source
from robustness.sources import robustbench as rbsource
from robustness.sources.leaderboard import leaderboard_claims, parse_leaderboard
from robustness.sources.robustbench_compat import alias_autoattack, import_robustbench

NAME = "Wong2020Fast"
#: Wong2020Fast's CIFAR-10 Linf row of the robustbench 1.1.1 README
README_ROW = {"source": "RobustBench leaderboard (robustbench 1.1.1 README)", "metric": "autoattack_acc",
              "clean_accuracy": 0.8334, "robust_accuracy": 0.4321, "norm": "linf", "eps": 8 / 255}


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt (and name lookup) fails at once."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_network(monkeypatch)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A RobustBench model directory holding Wong2020Fast.pt (random weights, BatchNorm statistics set)."""
    rb = import_robustbench()
    net = rb.model_zoo.model_dicts[rb.enums.BenchmarkDataset("cifar10")][rb.enums.ThreatModel("Linf")][NAME]["model"]()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
                module.num_batches_tracked.fill_(100)
    model_dir = tmp_path_factory.mktemp("rb") / "models"
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(net.state_dict(), model_dir / "cifar10" / "Linf" / f"{NAME}.pt")
    return model_dir, net.eval()


@pytest.fixture(scope="module")
def loaded(zoo: tuple[Path, nn.Module]):
    return load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=zoo[0]))


def test_loads_the_file_through_robustbench_and_records_what_it_loaded(zoo, loaded) -> None:
    model_dir, net = zoo
    path = model_dir / "cifar10" / "Linf" / f"{NAME}.pt"
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))
    assert not loaded.model.training and not isinstance(loaded.model, NormalizedModel)
    assert loaded.weights_sha256 == weights_sha256(net.state_dict())
    assert hashlib.sha256(path.read_bytes()).hexdigest() in loaded.weights
    assert (loaded.source, loaded.name, loaded.dataset, loaded.threat_model) == (
        f"robustbench:{NAME}", NAME, "cifar10", "Linf")
    assert loaded.arch == "Wong2020FastNet" and loaded.initial_weights is False
    assert loaded.integrity == f"{NAME}.pt: zip CRC-32 of every member verified"
    assert loaded.input_transform is None and loaded.input_shape == (3, 32, 32)
    # the normalization it applies inside its forward, read from its mu/sigma buffers
    assert loaded.mean == pytest.approx((0.4914, 0.4822, 0.4465)) and loaded.std == pytest.approx((0.2471, 0.2435, 0.2616))
    assert loaded.claims == pytest.approx({**README_ROW, "dataset": "cifar10"}) and loaded.info.claims == loaded.claims
    assert loaded.warnings == []


def test_dataset_aliases_and_the_threat_model_from_the_norm(zoo) -> None:
    loaded = load_from_source(f"robustbench:{NAME}", SourceOptions(dataset="CIFAR-10", norm="linf", model_dir=zoo[0]))
    assert (loaded.dataset, loaded.threat_model) == ("cifar10", "Linf")
    # ranked for Linf, evaluated in l2: loaded, with a warning that the leaderboard numbers do not compare
    loaded = load_from_source(f"robustbench:{NAME}", SourceOptions(threat_model="linf", norm="l2", model_dir=zoo[0]))
    assert loaded.threat_model == "Linf" and any("not comparable" in w for w in loaded.warnings)


def test_truncated_file_is_refused_before_robustbench_reads_it(zoo, tmp_path: Path) -> None:
    good = zoo[0] / "cifar10" / "Linf" / f"{NAME}.pt"
    bad = tmp_path / "models" / "cifar10" / "Linf" / f"{NAME}.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError) as info:
        load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=tmp_path / "models"))
    message = str(info.value)
    assert str(bad) in message and "corrupt or truncated" in message and "\n" not in message
    # an HTML page saved by a failed download
    bad.write_text("<!DOCTYPE html><html><title>Google Drive</title></html>")
    with pytest.raises(InputError, match="HTML page"):
        load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=tmp_path / "models"))


def test_files_robustbench_cannot_read_are_one_line_and_never_unpickled(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "models" / "cifar10" / "Linf" / f"{NAME}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(InputError, match=r"pickled Python objects \(argparse.Namespace\), which are never unpickled"):
        load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=tmp_path / "models"))
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)  # weights of another network
    with pytest.raises(InputError) as info:
        load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=tmp_path / "models"))
    assert "could not load its weights" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_without_network_is_one_line_naming_the_path(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    expected = model_dir / "cifar10" / "Linf" / f"{NAME}.pt"
    with pytest.raises(InputError) as info:
        load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=model_dir))
    message = str(info.value)
    assert "\n" not in message and str(expected) in message
    assert "could not be downloaded" in message and "--model-dir" in message
    # nothing left behind: no partial file, no temporary file, not even the directories made for them
    assert not model_dir.exists() or not any(model_dir.rglob("*"))


def test_missing_file_in_an_existing_directory_leaves_it_as_it_was(tmp_path: Path) -> None:
    directory = tmp_path / "models" / "cifar10" / "Linf"
    directory.mkdir(parents=True)
    (directory / "Other.pt").write_bytes(b"unrelated")
    with pytest.raises(InputError, match="could not be downloaded"):
        load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=tmp_path / "models"))
    assert sorted(p.name for p in directory.iterdir()) == ["Other.pt"]


def test_unknown_names_suggest_the_close_ones() -> None:
    with pytest.raises(InputError, match="did you mean Wong2020Fast"):
        load_from_source("robustbench:Wong2020Fats", SourceOptions())
    with pytest.raises(InputError, match="did you mean Wong2020Fast"):
        load_from_source("robustbench:wong2020fast", SourceOptions())
    with pytest.raises(InputError, match=r"Standard_R50 is ranked for imagenet Linf"):
        load_from_source("robustbench:Standard_R50", SourceOptions(dataset="cifar10"))


def test_threat_models_and_datasets_robustbench_does_not_rank_are_refused() -> None:
    for options in (SourceOptions(norm="l1"), SourceOptions(threat_model="L1")):
        with pytest.raises(InputError, match="RobustBench ranks no L1 models"):
            load_from_source(f"robustbench:{NAME}", options)
    with pytest.raises(InputError, match=r"no imagenet models for the threat model 'L2'.*Linf, corruptions"):
        load_from_source("robustbench:Standard_R50", SourceOptions(dataset="imagenet", threat_model="L2"))
    with pytest.raises(InputError, match="ranks no models on 'mnist'"):
        load_from_source(f"robustbench:{NAME}", SourceOptions(dataset="mnist"))
    with pytest.raises(InputError, match="10 classes but the data has 100"):
        load_from_source(f"robustbench:{NAME}", SourceOptions(num_classes=100))


def test_imagenet_preprocessing_maps_to_an_input_transform_or_is_refused() -> None:
    net = nn.Identity()
    assert rbsource._input_transform(net, {"preprocessing": "Res256Crop224"}, "imagenet", "s", None) == \
        InputTransform(size=(224, 224), resize=256, interpolation="bilinear")
    assert rbsource._input_transform(net, {"preprocessing": "BicubicRes256Crop224"}, "imagenet", "s", None
                                     ).interpolation == "bicubic"
    assert rbsource._input_transform(net, {"preprocessing": "Crop288"}, "cifar10", "s", None) is None
    assert rbsource._input_transform(net, {"preprocessing": "Crop288"}, "imagenet", "s", None) == \
        InputTransform(size=(288, 288), resize=None, mode="crop")
    assert rbsource._input_transform(net, {"preprocessing": "Res224"}, "imagenet", "s", None) == \
        InputTransform(size=(224, 224), resize=None, mode="resize")
    for key in (None, "Unheard"):
        with pytest.raises(InputError, match="does not reproduce"):
            rbsource._input_transform(net, {"preprocessing": key}, "imagenet", "s", None)
    # every name the installed robustbench defines is mapped, to the same images its own transform gives
    from PIL import Image

    image = Image.fromarray((torch.rand(300, 340, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    preprocessings = import_robustbench().data.PREPROCESSINGS
    names = {k for k in preprocessings if k is not None}
    assert names == set(rbsource.PREPROCESSING_TRANSFORMS)
    for name in names:
        ours = rbsource.PREPROCESSING_TRANSFORMS[name].torchvision()(image)
        assert torch.equal(ours, preprocessings[name](image)), name


def test_an_imagenet_model_records_robustbenchs_preprocessing_and_its_normalizer(tmp_path: Path) -> None:
    """Salman2020Do_R18 (ResNet-18): RobustBench adds its normalizer around the checkpoint's network."""
    rb = import_robustbench()
    net = rb.model_zoo.model_dicts[rb.enums.BenchmarkDataset("imagenet")][rb.enums.ThreatModel("Linf")][
        "Salman2020Do_R18"]["model"]()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.fill_(2.0)
                module.num_batches_tracked.fill_(1)
    path = tmp_path / "models" / "imagenet" / "Linf" / "Salman2020Do_R18.pt"
    path.parent.mkdir(parents=True)
    torch.save(net.model.state_dict(), path)  # the checkpoint holds the bare network, as RobustBench's does
    loaded = load_from_source("robustbench:Salman2020Do_R18", SourceOptions(dataset="imagenet",
                                                                            model_dir=tmp_path / "models"))
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net.eval()(x))
    assert loaded.input_transform == InputTransform(size=(224, 224), resize=256, interpolation="bilinear")
    assert loaded.input_shape == (3, 224, 224) and loaded.info.input_transform["resize"] == 256
    assert loaded.mean == pytest.approx((0.485, 0.456, 0.406)) and "normalize.mean/std" in loaded.weights
    assert loaded.claims["eps"] == pytest.approx(4 / 255) and loaded.claims["robust_accuracy"] == pytest.approx(0.2532)


def test_a_preprocessing_the_data_cannot_match_is_refused_before_any_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delitem(rbsource.PREPROCESSING_TRANSFORMS, "Crop288")  # as for a name a later robustbench adds
    with pytest.raises(InputError, match="'Crop288', which the imagenet data source does not reproduce"):
        load_from_source(f"robustbench:{NAME}", SourceOptions(dataset="imagenet", model_dir=tmp_path / "models"))
    assert not (tmp_path / "models").exists()


def test_normalization_buffers_are_found_outermost_or_not_at_all() -> None:
    class Normalizer(nn.Module):
        def __init__(self, mean: float, std: float) -> None:
            super().__init__()
            self.register_buffer("mean", torch.full((1, 3, 1, 1), mean))
            self.register_buffer("std", torch.full((1, 3, 1, 1), std))

    wrapped = nn.Sequential(Normalizer(0.5, 0.25), nn.Sequential(Normalizer(0.1, 0.2), nn.Flatten()))
    mean, std, where = rbsource._normalization(wrapped)
    assert mean == (0.5,) * 3 and std == (0.25,) * 3 and where == "0.mean/std"
    assert rbsource._normalization(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))) is None
    ensemble = nn.ModuleList([nn.Sequential(Normalizer(0.5, 0.25)), nn.Sequential(Normalizer(0.4, 0.25))])
    assert rbsource._normalization(ensemble) is None  # members disagree: nothing recorded rather than one of them


def test_autoattack_alias_when_autoattack_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyautoattack

    for name in [n for n in sys.modules if n == "autoattack" or n.startswith("autoattack.")]:
        monkeypatch.delitem(sys.modules, name)
    assert alias_autoattack() is True
    assert sys.modules["autoattack"] is pyautoattack
    assert importlib.import_module("autoattack.state").EvaluationState is importlib.import_module(
        "pyautoattack.state").EvaluationState
    assert alias_autoattack() is False  # already there: left alone
    for name in [n for n in sys.modules if n == "autoattack" or n.startswith("autoattack.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(InputError, match=r"pip install \"pyautoattack>=0.2,<0.3\""):
        alias_autoattack()


def test_missing_robustbench_or_pkg_resources_is_one_line_saying_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    with pytest.raises(InputError, match=r'pip install "setuptools<81"'):
        load_from_source(f"robustbench:{NAME}", SourceOptions())
    monkeypatch.setitem(sys.modules, "robustbench", None)
    with pytest.raises(InputError, match=r'pip install -e "\.\[zoo\]"'):
        load_from_source(f"robustbench:{NAME}", SourceOptions())


def test_leaderboard_claims_from_the_readme_and_from_model_info(tmp_path: Path) -> None:
    assert leaderboard_claims("Carmon2019Unlabeled", "cifar10", "Linf") == pytest.approx(
        {**README_ROW, "clean_accuracy": 0.8969, "robust_accuracy": 0.5953})
    corr = leaderboard_claims("Standard", "cifar10", "corruptions")
    assert (corr["metric"], corr["robust_accuracy"], corr["norm"], corr["eps"]) == ("corruptions_acc", 0.7346, None, None)
    assert leaderboard_claims("Standard", "cifar10", "L2")["eps"] == 0.5
    assert leaderboard_claims("NoSuchModel", "cifar10", "Linf") is None
    # a model_info JSON is preferred over the README
    info = tmp_path / "model_info" / "cifar10" / "Linf" / "Carmon2019Unlabeled.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"clean_acc": "89.70", "autoattack_acc": "59.50", "eps": "8/255"}))
    claims = leaderboard_claims("Carmon2019Unlabeled", "cifar10", "Linf", tmp_path / "model_info")
    assert claims["clean_accuracy"] == pytest.approx(0.897) and claims["robust_accuracy"] == pytest.approx(0.595)
    assert claims["eps"] == pytest.approx(8 / 255) and str(info) in claims["source"]
    # tables: N/A cells, a heading inside a code block, an unknown section
    text = "\n".join([
        "### CIFAR-10", "```", "### ImageNet", "```", "#### L2, eps=0.5",
        "| <sub>#</sub> | <sub>Model ID</sub> | <sub>Clean accuracy</sub> | <sub>Robust accuracy</sub> |",
        "|:---:|---|:---:|:---:|",
        "| <sub>**1**</sub> | <sub><sup>**A**</sup></sub> | <sub>N/A</sub> | <sub>50.00%</sub> |",
        "### Something else", "#### Linf, eps=8/255", "| 1 | Model ID | Clean accuracy | Robust accuracy |",
        "| 1 | B | 90% | 40% |"])
    tables = parse_leaderboard(text, "t")
    assert tables == {("cifar10", "L2"): {"A": {"source": "t", "metric": "autoattack_acc", "clean_accuracy": None,
                                                "robust_accuracy": 0.5, "norm": "l2", "eps": 0.5}}}


def test_evaluate_end_to_end_and_the_report_model_block(loaded, tmp_path: Path) -> None:
    from robustness import evaluate
    from robustness.attacks.pgd import PGD

    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = loaded.model(x).argmax(1)
    report = evaluate(loaded.model, (x, y), attacks=[PGD(steps=2)], epsilons=[0, 8 / 255], norm="linf", seed=0,
                      checks=False)
    assert report.clean_accuracy == 1.0 and 0.0 <= report.robust_accuracy[8 / 255] <= 1.0
    assert report.model.weights_sha256 == loaded.weights_sha256  # the weights measured are the weights loaded
    report.model = loaded.info  # as the CLI does
    report.save(tmp_path / "out")
    block = json.loads((tmp_path / "out" / "report.json").read_text())["model"]
    assert (block["source"], block["name"], block["threat_model"]) == (f"robustbench:{NAME}", NAME, "Linf")
    assert block["claims"] == pytest.approx({**README_ROW, "dataset": "cifar10"}) and block["weights_sha256"] == loaded.weights_sha256
    assert Report.from_dict(json.loads((tmp_path / "out" / "report.json").read_text())).model.claims == block["claims"]


def test_cli_evaluates_a_robustbench_model_on_cifar10_beside_the_leaderboard(zoo, tmp_path, monkeypatch,
                                                                            capsys) -> None:
    """`robustness evaluate --model robustbench:NAME --data cifar10`: torchvision's CIFAR-10 files (written
    here, a few test images), the model from the zoo directory, the leaderboard's figures set beside ours at
    the leaderboard's budget, and robustbench.json written with the footnote of a run that is not the protocol."""
    from robustness import cli
    from tests.robustness.test_datasets import _write_cifar

    model_dir, net = zoo
    _write_cifar(tmp_path / "data", monkeypatch, hundred=False)
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", f"robustbench:{NAME}", "--model-dir", str(model_dir), "--data", "cifar10",
                     "--data-dir", str(tmp_path / "data"), "--attacks", "fgsm", "--eps", "0,8/255", "--no-checks",
                     "--device", "cpu", "--out", str(out), "--format", "robustbench"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "published (RobustBench leaderboard" in printed and "clean 83.3%" in printed
    saved = json.loads((out / "report.json").read_text())
    block, published = saved["model"], saved["published"]
    assert block["source"] == f"robustbench:{NAME}" and block["threat_model"] == "Linf"
    assert block["weights_sha256"] == weights_sha256(net) and block["claims"]["dataset"] == "cifar10"
    assert published["comparable"] is True and published["robust"]["eps"] == pytest.approx(8 / 255)
    assert published["robust"]["claimed"] == 0.4321 and published["clean"]["claimed"] == 0.8334
    measured = saved["robust_accuracy"][str(8 / 255)]
    assert published["robust"]["measured"] == pytest.approx(measured)
    assert published["robust"]["difference"] == pytest.approx(100 * (measured - 0.4321), abs=0.01)
    entry = json.loads((out / "robustbench.json").read_text())
    assert entry["dataset"] == "cifar10" and entry["eps"] == "8/255" and entry["architecture"] == "Wong2020FastNet"
    assert entry["autoattack_acc"] == f"{100 * measured:.2f}" and "AutoAttack's standard" in entry["footnote"]


def test_cli_missing_robustbench_file_offline_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    import numpy as np

    from robustness import cli

    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 3, 32, 32), np.float32), y=np.zeros(2, np.int64))
    code = cli.main(["evaluate", "--model", f"robustbench:{NAME}", "--model-dir", str(tmp_path / "empty"),
                     "--data", str(data), "--attacks", "fgsm", "--eps", "0,8/255", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(tmp_path / "empty" / "cifar10" / "Linf" / f"{NAME}.pt") in err
    assert not (tmp_path / "empty" / "cifar10" / "Linf" / f"{NAME}.pt").exists()


def test_a_model_info_directory_reaches_the_loaded_claims(zoo, tmp_path: Path) -> None:
    model_dir, _ = zoo
    info = tmp_path / "model_info" / "cifar10" / "Linf" / f"{NAME}.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"clean_acc": "83.30", "autoattack_acc": "43.00", "eps": "8/255"}))
    loaded = load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=model_dir,
                                                                   model_info_dir=tmp_path / "model_info"))
    assert loaded.claims["robust_accuracy"] == pytest.approx(0.43) and str(info) in loaded.claims["source"]
    assert loaded.claims["dataset"] == "cifar10"


def test_cli_model_info_gives_the_claims_and_belongs_to_robustbench_models(zoo, tmp_path, capsys) -> None:
    import numpy as np

    from robustness import cli

    model_dir, _ = zoo
    info = tmp_path / "model_info" / "cifar10" / "Linf" / f"{NAME}.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"clean_acc": "80.00", "autoattack_acc": "40.00", "eps": "8/255"}))
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32), y=np.arange(3))
    base = ["evaluate", "--data", str(data), "--attacks", "fgsm", "--eps", "0,8/255", "--no-checks", "--quiet"]
    assert cli.main([*base, "--model", f"robustbench:{NAME}", "--model-dir", str(model_dir), "--model-info",
                     str(tmp_path / "model_info"), "--out", str(tmp_path / "o")]) == 0
    claims = json.loads((tmp_path / "o" / "report.json").read_text())["model"]["claims"]
    assert claims["robust_accuracy"] == pytest.approx(0.40) and str(info) in claims["source"]
    capsys.readouterr()
    assert cli.main([*base, "--model", "digits-cnn", "--model-info", str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "--model-info" in capsys.readouterr().err


def test_robustness_load_model_describes_a_robustbench_model_as_loaded(zoo) -> None:
    """Its normalization lives in its own buffers (covered by the weights' hash), not in a NormalizedModel:
    the description applies as loaded, and the report's model block is the loader's."""
    import robustness
    from robustness.model_info import describe_model

    model_dir, _ = zoo
    model = robustness.load_model(f"robustbench:{NAME}", model_dir=model_dir)
    expected = load_from_source(f"robustbench:{NAME}", SourceOptions(model_dir=model_dir)).info
    assert describe_model(model) == expected and expected.normalization is not None
