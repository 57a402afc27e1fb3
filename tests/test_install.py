"""Discovery: the wheel ships the .pth hook, and the hook is import-light."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e  # installs, subprocesses of the stock CLI


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


@pytest.mark.slow
def test_importing_mergekit_wraps_run_merge_and_leaves_the_registry_alone():
    """frank_wolfe is registered only during a frank_wolfe run: mergekit's enumerations of
    its registry (its own test suite merges state dicts with every listed method) never
    meet a method that needs calibration data."""
    code = (
        "from mergekit.merge_methods import registered_methods; import mergekit.merge as m;"
        "print('frank_wolfe' in [x.spec.name for x in registered_methods()], getattr(m.run_merge, '_mergekit_fw', False))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True"], out.stderr
    disabled = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"MERGEKIT_FW_DISABLE": "1", "PATH": ""},
    )
    assert disabled.stdout.split() == ["False", "False"], disabled.stderr


def test_every_listed_method_merges_state_dicts_with_mergekit_fw_installed():
    """The check of mergekit's test_merge_method_regressions that frank_wolfe used to fail."""
    code = (
        "import torch, mergekit_fw, mergekit.merge\n"
        "from mergekit.merge_methods import registered_methods, merge_state_dicts\n"
        "names = [m.spec.name for m in registered_methods()]\n"
        "assert 'frank_wolfe' not in names, names\n"
        "print(len(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and int(out.stdout) > 5, out.stderr


def test_the_method_is_registered_during_a_run_only(zoo, tmp_path, monkeypatch):
    from mergekit.merge_methods import registered_methods

    import mergekit_fw.mergekit.runner as runner
    from tests.helpers import write_recipe

    seen = []
    original = runner.write_merge

    def spy(*args, **kwargs):
        seen.append("frank_wolfe" in [m.spec.name for m in registered_methods()])
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "write_merge", spy)
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=1,
    )  # fmt: skip
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(config, str(tmp_path / "out"), MergeOptions(quiet=True))
    assert seen == [True]
    assert "frank_wolfe" not in [m.spec.name for m in registered_methods()]
    assert (tmp_path / "out" / "fw_plan.json").exists()


@pytest.mark.slow
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


@pytest.mark.slow
def test_stock_help_is_byte_identical_with_and_without_mergekit_fw():
    import os

    exe = str(Path(sys.executable).with_name("mergekit-yaml"))
    outputs = [
        subprocess.run(
            [exe, "--help"], capture_output=True, env={**os.environ, **env}, timeout=300
        ).stdout
        for env in ({}, {"MERGEKIT_FW_DISABLE": "1"})
    ]
    assert outputs[0] and outputs[0] == outputs[1]
