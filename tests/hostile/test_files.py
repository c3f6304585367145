"""Hostile and damaged files: flipped bytes inside a zip member, and pickles that would run code.

Every file the harness reads with ``torch.load`` (model checkpoints and state dicts, ``.pt`` data
files, training states, evaluation state records) is a zip file whose members carry CRC-32
checksums that torch does not check, and may hold a pickle that would run code if unpickled.
Each test writes its own files into ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robustness import cli
from robustness.datasets import load_dataset
from robustness.defenses.checkpointing import load_training_state, save_training_state
from robustness.errors import InputError
from robustness.integrity import pickled_global
from robustness.loading import DEFAULT_MODEL_PATH, load_model

FAST = ["--n", "4", "--attacks", "fgsm", "--eps", "0,0.1", "--quiet", "--no-checks"]


def _flip_member_bytes(path: Path, member_suffix: str, count: int = 200) -> str:
    """XOR ``count`` bytes in the middle of the data of the first zip member whose name ends with
    ``member_suffix``, in place (the archive stays readable: only the checksum can tell); its name."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix) and i.file_size >= count)
    raw = bytearray(path.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26:header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28:header + 30], "little")
    start = header + 30 + name_len + extra_len + (info.file_size - count) // 2
    for i in range(start, start + count):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return info.filename


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- flipped bytes


def test_flipped_bytes_in_a_checkpoints_weights_are_refused_naming_the_member(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.pt"
    shutil.copy(DEFAULT_MODEL_PATH, path)
    member = _flip_member_bytes(path, "/data/0")
    torch.load(path, weights_only=True)  # torch itself reads the damaged file without a word
    with pytest.raises(InputError) as info:
        load_model(str(path))
    message = str(info.value)
    assert str(path) in message and member in message and "CRC-32" in message and "\n" not in message
    # the CLI: exit 2, one line
    assert cli.main(["evaluate", "--model", str(path), "--out", str(tmp_path / "out"), *FAST]) == 2
    err = _one_line_error(capsys)
    assert member in err and "CRC-32" in err
    assert not (tmp_path / "out").exists()


def test_flipped_bytes_in_a_plain_state_dict_data_file_and_training_state(tmp_path: Path) -> None:
    sd = tmp_path / "sd.pt"
    torch.save({"w": torch.randn(64, 64)}, sd)
    member = _flip_member_bytes(sd, "/data/0")
    with pytest.raises(InputError, match=rf"{member}.*CRC-32"):
        load_model(str(sd), arch="small-cnn")

    data = tmp_path / "data.pt"
    torch.save({"x": torch.rand(64, 1, 8, 8), "y": torch.arange(64) % 10}, data)
    member = _flip_member_bytes(data, "/data/0")
    with pytest.raises(InputError, match=rf"dataset file .*{member}.*CRC-32"):
        load_dataset(str(data))

    state = tmp_path / "run.pt.state"
    save_training_state(state, {"model": {"w": torch.randn(64, 64)}})
    member = _flip_member_bytes(state, "/data/0")
    with pytest.raises(InputError, match=rf"training checkpoint .*{member}.*CRC-32.*It was not used"):
        load_training_state(state)


def test_legacy_files_load_unverified_and_say_so(tmp_path: Path) -> None:
    checkpoint = torch.load(DEFAULT_MODEL_PATH, weights_only=True)
    path = tmp_path / "legacy.pt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    loaded = load_model(str(path))
    assert loaded.integrity is not None and "legacy" in loaded.integrity and "not verified" in loaded.integrity
    assert "verified" in load_model(str(DEFAULT_MODEL_PATH)).integrity  # type: ignore[operator]


# ----------------------------------------------------------------------------- pickles that run code


class _RunsCode:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "unpickling ran the file's code"


def _assert_objects_message(message: str, path: Path) -> None:
    assert str(path) in message and "pickled Python objects" in message and "never unpickled" in message
    assert "system" in message  # names what it would have called
    assert "weights_only=False" not in message and "corrupt" not in message and "\n" not in message


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_pickle_that_runs_code_is_named_as_such_and_never_run(tmp_path: Path, marker: Path, legacy: bool,
                                                                 capsys) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _RunsCode(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(InputError) as info:
        load_model(str(path), arch="small-cnn")
    _assert_objects_message(str(info.value), path)
    assert cli.main(["evaluate", "--model", str(path), "--arch", "small-cnn", "--out", str(tmp_path / "o"),
                     *FAST]) == 2
    _assert_objects_message(_one_line_error(capsys), path)


def test_data_files_and_training_states_holding_code(tmp_path: Path, marker: Path) -> None:
    data = tmp_path / "data.pt"
    torch.save({"x": torch.rand(2, 1, 8, 8), "y": _RunsCode(marker)}, data)
    with pytest.raises(InputError) as info:
        load_dataset(str(data))
    _assert_objects_message(str(info.value), data)

    state = tmp_path / "run.pt.state"
    torch.save({"format": "robustness-training-state", "model": _RunsCode(marker)}, state)
    with pytest.raises(InputError) as info:
        load_training_state(state)
    _assert_objects_message(str(info.value), state)


@pytest.mark.parametrize("message", [
    "Weights only load failed. ... Trying to load unsupported GLOBAL posix.system whose module posix is blocked.",
    "WeightsUnpickler error: Unsupported global: GLOBAL torch.nn.modules.linear.Linear was not an allowed global",
])
def test_refused_globals_are_found_whatever_the_case(message: str) -> None:
    assert pickled_global(RuntimeError(message)) in ("posix.system", "torch.nn.modules.linear.Linear")
    assert pickled_global(RuntimeError("unexpected EOF, expected 20177 more bytes")) is None
