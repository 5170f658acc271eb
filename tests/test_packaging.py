"""The install files agree with each other and the command line exists."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def pyproject_requirements() -> set[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(meta["dependencies"]) | set(meta["optional-dependencies"]["dev"])


def environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = set()
    for line in lines[start + 1 :]:
        item = line.strip()
        if item.startswith("- ") and not item.startswith("- -e"):
            reqs.add(item[2:].strip())
    return reqs


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    env = environment_requirements()
    env.discard("torch==2.13.0")  # the CPU pin installed first, as in the Makefile
    assert env == pyproject_requirements()


def test_no_second_opencv():
    names = {_name(r) for r in pyproject_requirements()}
    assert "opencv-python" not in names  # mediapipe brings opencv-contrib-python


def test_layout():
    for path in (
        "notebooks",
        "minitalk",
        "data_samples",
        "tests",
        "environment.yml",
        "pyproject.toml",
        "README.md",
        "Makefile",
        "benchmarks",
        ".ci/run",
    ):
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize(
    ("cmd", "names"),
    [
        (["minitalk", "--help"], ["demo", "prepare", "train", "render"]),
        ([sys.executable, "-m", "minitalk", "--help"], ["demo", "render"]),
        (["minitalk", "demo", "--help"], ["--sample"]),
        (["minitalk", "render", "--help"], ["AVATAR", "--roles", "--overwrite"]),
    ],
)
def test_command_line_help(cmd, names):
    if cmd[0] == "minitalk":
        cmd[0] = str(Path(sys.executable).with_name("minitalk"))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "usage:" in out and all(name in out for name in names)


def test_demo_names_a_missing_sample(tmp_path):
    from minitalk.cli import main

    assert main(["demo", "--sample", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1


def test_every_module_is_reachable_from_the_package():
    import minitalk

    modules = {p.stem for p in (ROOT / "minitalk").glob("*.py") if not p.stem.startswith("_")}
    modules |= {p.name for p in (ROOT / "minitalk").iterdir() if (p / "__init__.py").exists()}
    assert modules == set(minitalk._SUBMODULES)
    for name in modules:
        assert getattr(minitalk, name).__name__ == f"minitalk.{name}"


# Imports run down this order only: a stage may use the ones below it, never one above or beside.
LAYERS = (
    {"camera", "files", "io", "utils", "settings"},  # shared foundations
    {"prepare"},
    {"metrics", "synthetic"},  # the metrics and the sample generator read landmarks as prepare does
    {"pose"},
    {"nerf"},
    {"dialogue"},
    {"evaluate"},
    {"export", "demo"},  # what runs several stages
    {"walkthrough"},  # the notebooks' chained run: prepare, train, export
    {"cli"},
)


def _minitalk_imports(path: Path) -> set[str]:
    """The minitalk modules a file imports, at any depth (`from minitalk.a import b` gives a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minitalk"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minitalk")}
    return found


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def test_stages_import_downward_only():
    upward = []
    for path in (ROOT / "minitalk").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for target in _minitalk_imports(path):
            here, there = _layer(module), _layer(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} -> {target}")
    assert not upward


def test_evaluation_and_the_avatar_file_stay_out_of_training():
    """Evaluation reads faces without the NeRF's dataset; the avatar file packs and loads, and fits
    nothing (the fitting is `minitalk.export`'s, which calls each stage's own)."""
    for path in (ROOT / "minitalk" / "evaluate").glob("*.py"):
        assert "minitalk.nerf.frames" not in _minitalk_imports(path), path.name
    avatar = _minitalk_imports(ROOT / "minitalk" / "dialogue" / "avatar.py")
    assert not {m for m in avatar if m.startswith("minitalk.prepare")}
    assert not {m for m in avatar if m.endswith("fit_motion_models") or m.endswith("voice_prints")}
