"""Discovery: the wheel ships the .pth hook, and the hook is import-light."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0 and "hatchling" in result.stderr:
        pytest.fail(
            "hatchling is needed to build the wheel: pip install '.[test]'\n" + result.stderr
        )
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("mergekit_fw-*.whl")
    return path


def test_wheel_ships_the_hook_at_site_packages_root(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "mergekit_fw.pth" in names and "_mergekit_fw_hook.py" in names
    pth = zipfile.ZipFile(wheel).read("mergekit_fw.pth").decode()
    assert pth.strip() == "import _mergekit_fw_hook; _mergekit_fw_hook.install()"


def test_interpreter_start_stays_light():
    code = "import sys; print('torch' in sys.modules, 'mergekit_fw' in sys.modules, '_mergekit_fw_hook' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    ).stdout.split()
    assert out == ["False", "False", "True"]


def test_importing_mergekit_registers_the_method_and_wraps_run_merge():
    code = (
        "from mergekit.merge_methods import registered_methods; import mergekit.merge as m;"
        "print('frank_wolfe' in [x.spec.name for x in registered_methods()], getattr(m.run_merge, '_mergekit_fw', False))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True"], out.stderr
    disabled = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"MERGEKIT_FW_DISABLE": "1", "PATH": ""},
    )
    assert disabled.stdout.split() == ["False", "False"], disabled.stderr


def test_other_recipes_pass_through_untouched(zoo, tmp_path):
    """A stock method under the wrapper behaves exactly as without mergekit-fw."""
    import yaml

    recipe = tmp_path / "ta.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "task_arithmetic", "base_model": zoo["base"], "dtype": "float32",
        "models": [{"model": zoo["add"], "parameters": {"weight": 0.5}}],
    }))  # fmt: skip
    exe = str(Path(sys.executable).with_name("mergekit-yaml"))
    for name, env in [("with", {}), ("without", {"MERGEKIT_FW_DISABLE": "1"})]:
        import os

        result = subprocess.run(
            [exe, str(recipe), str(tmp_path / name)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "with" / "model.safetensors").read_bytes() == (
        tmp_path / "without" / "model.safetensors"
    ).read_bytes()
    assert not (tmp_path / "with" / "fw_plan.json").exists()
