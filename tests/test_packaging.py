"""The package installs one import name, ``robustness``: a user's own ``attacks.py`` or
``defenses/`` next to their script never collides with ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -P would drop the script's directory from sys.path; we want it there, as a user's run has it
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layout", ["module", "package"])
def test_a_users_attacks_and_defenses_do_not_shadow_ours(tmp_path: Path, layout: str) -> None:
    if layout == "module":
        (tmp_path / "attacks.py").write_text("MINE = True\n")
        (tmp_path / "defenses.py").write_text("MINE = True\n")
    else:
        for name in ("attacks", "defenses"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "__init__.py").write_text("MINE = True\n")
    code = (
        "import sys, robustness, robustness.runner, robustness.cli\n"
        "from robustness.attacks import PGD\n"
        "from robustness.defenses import JPEG, defend\n"
        "import attacks, defenses\n"
        "print(attacks.MINE, defenses.MINE)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('attacks', 'defenses')))\n"
    )
    # the user's modules are imported last, on purpose: before that, none of ours may be named so
    probe = code.replace("import attacks, defenses\nprint(attacks.MINE, defenses.MINE)\n", "")
    before = _run(probe, tmp_path)
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip().splitlines()[-1] == "[]"
    after = _run(code, tmp_path)
    assert after.returncode == 0, after.stderr
    assert after.stdout.splitlines()[0] == "True True"


def test_registered_attacks_load_from_the_robustness_namespace() -> None:
    from robustness.registry import ATTACKS

    for name in ATTACKS.list():
        cls = ATTACKS.load(name)
        assert cls.__module__.startswith("robustness.attacks."), (name, cls.__module__)


def test_the_wheel_installs_only_the_robustness_import_name(tmp_path: Path) -> None:
    # a copy of the sources, with a leftover report directory that must not be packaged
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                           ".pytest_cache", ".hypothesis", "robustness-report"))
    (src / "robustness-report" / "standard").mkdir(parents=True)
    (src / "robustness-report" / "standard" / "report.md").write_text("# stale\n")
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top).decode().split() == ["robustness"]
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"robustness"}
    for module in ("robustness/attacks/pgd.py", "robustness/defenses/trainer.py", "robustness/checks/__init__.py",
                   "robustness/cli/__init__.py", "robustness/weights/digits_cnn.pt", "robustness/attacks/py.typed",
                   "robustness/sources/__init__.py", "robustness/sources/timm_models.py"):
        assert module in names, module
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "robustness.attacks.pgd:PGD" in entry_points and "robustness = robustness.cli:main" in entry_points
