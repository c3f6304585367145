"""Hostile model and data files through `robustness evaluate`: each exits 2 with one line naming it.

Fake TorchScript, object arrays in a ``.npz``, truncated and empty files, a device that never
ends (``/dev/zero``), ``/dev/null``, a directory, a FIFO, and tensors that hold no plain values
(sparse, meta-device) in a ``.pt`` data file. The loaders refuse each before the evaluation
(stubbed to fail loudly); a FIFO is refused without being opened (opening it for reading would
block until a writer came: the test unblocks such a reader and fails). Flipped bytes and pickles
that run code are in ``test_files.py``.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from robustness import cli
from robustness.loading import DEFAULT_MODEL_PATH

FAST = ["--n", "4", "--attacks", "fgsm", "--eps", "0,0.1", "--quiet", "--no-checks"]


def _fake_torchscript(path: Path) -> None:
    """A zip laid out like a TorchScript archive (code/, constants.pkl, data.pkl) holding garbage."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/code/__torch__/model.py", "def forward(self, x):\n    return x\n")
        zf.writestr("archive/constants.pkl", b"not a pickle")
        zf.writestr("archive/data.pkl", b"not a pickle either")
        zf.writestr("archive/version", "3\n")


def _truncated(source: Callable[[Path], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        source(path)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    return write


def _data_pt(path: Path, **replace: torch.Tensor) -> None:
    torch.save({"x": torch.rand(4, 1, 8, 8), "y": torch.arange(4), **replace}, path)


def _data_npz(path: Path) -> None:
    np.savez(path, x=np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32), y=np.arange(4))


MODELS: dict[str, Callable[[Path], None]] = {
    "fake-torchscript.pt": _fake_torchscript,
    "empty.pt": lambda p: p.write_bytes(b""),
    "truncated.pt": lambda p: p.write_bytes(DEFAULT_MODEL_PATH.read_bytes()[:20000]),
    "fifo.pt": os.mkfifo,
    "directory.pt": Path.mkdir,
}
DATA: dict[str, Callable[[Path], None]] = {
    "objects.npz": lambda p: np.savez(p, x=np.array([object()] * 4, dtype=object), y=np.arange(4)),
    "empty.npz": lambda p: p.write_bytes(b""),
    "empty.pt": lambda p: p.write_bytes(b""),
    "truncated.npz": _truncated(_data_npz),
    "truncated.pt": _truncated(_data_pt),
    "fifo.npz": os.mkfifo,
    "fifo.pt": os.mkfifo,
    "directory.npz": Path.mkdir,
    "sparse-x.pt": lambda p: _data_pt(p, x=torch.rand(4, 1, 8, 8).to_sparse()),
    "sparse-y.pt": lambda p: _data_pt(p, y=torch.arange(4).to_sparse()),
    "meta-x.pt": lambda p: _data_pt(p, x=torch.empty(4, 1, 8, 8, device="meta")),
}
DEVICES = ["/dev/null", "/dev/zero"]


@pytest.fixture()
def no_work(monkeypatch):
    def reached(*args, **kwargs):
        raise RuntimeError("REACHED THE EVALUATION: the hostile file was accepted")

    monkeypatch.setattr(cli.runner, "evaluate", reached)


def _main_without_blocking(argv: list[str], fifo: Path | None) -> int | None:
    """``cli.main(argv)`` in a thread; if it is still running after a while (blocked reading ``fifo``),
    open the FIFO's other end so that it ends, and return ``None``."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(cli.main(argv)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive() and fifo is not None:
        with open(fifo, "wb"):  # unblocks a reader stuck in open(); it then reads end-of-file
            pass
        thread.join(timeout=60)
        return None
    return result[0] if result else None


def _check(argv: list[str], path: str, tmp_path: Path, capsys) -> None:
    fifo = Path(path) if Path(path).is_fifo() else None
    code = _main_without_blocking([*argv, "--out", str(tmp_path / "out"), *FAST], fifo)
    err = capsys.readouterr().err.strip()
    assert code is not None, f"the command blocked reading {path} (a FIFO must be refused without opening it)"
    assert code == 2, f"exit {code}: {err}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert path in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", list(MODELS))
def test_hostile_model_files_exit_2_on_one_line(name: str, no_work, tmp_path: Path, capsys) -> None:
    path = tmp_path / name
    MODELS[name](path)
    _check(["evaluate", "--model", str(path)], str(path), tmp_path, capsys)


@pytest.mark.parametrize("name", list(DATA))
def test_hostile_data_files_exit_2_on_one_line(name: str, no_work, tmp_path: Path, capsys) -> None:
    path = tmp_path / name
    DATA[name](path)
    _check(["evaluate", "--model", str(DEFAULT_MODEL_PATH), "--data", str(path)], str(path), tmp_path, capsys)


@pytest.mark.skipif(not all(Path(d).exists() for d in DEVICES), reason="needs /dev/null and /dev/zero")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flag", ["--model", "--data"])
def test_devices_are_refused_without_being_read(flag: str, device: str, no_work, tmp_path: Path, capsys) -> None:
    argv = ["evaluate", "--model", str(DEFAULT_MODEL_PATH), flag, device]  # /dev/zero would never end
    _check(argv, device, tmp_path, capsys)


def test_sparse_and_meta_tensors_say_what_to_save_instead(tmp_path: Path, capsys) -> None:
    DATA["sparse-x.pt"](tmp_path / "s.pt")
    DATA["meta-x.pt"](tmp_path / "m.pt")
    for name, words in (("s.pt", "x.to_dense()"), ("m.pt", "meta-device tensor, which holds no values")):
        argv = ["evaluate", "--model", str(DEFAULT_MODEL_PATH), "--data", str(tmp_path / name)]
        assert cli.main([*argv, "--out", str(tmp_path / "out"), *FAST]) == 2
        assert words in capsys.readouterr().err
