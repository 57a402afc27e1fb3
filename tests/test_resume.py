"""Resume: a killed pre-pass continues from its last finished iteration and writes the same
bytes; changed inputs start over; the write phase never leaves an output that looks done."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions
from safetensors.torch import load_file

import mergekit_fw.fw.loop
from mergekit_fw.fw import state as loop_state
from mergekit_fw.mergekit.resume import Checkpointer, OutputGuard, requested, state_folder
from mergekit_fw.plan import PLAN_FILE, FWPlan
from mergekit_fw.settings import FWConfigError
from tests.helpers import write_recipe

ITERATIONS = 4


class Killed(Exception):
    """Stands in for SIGKILL: raised right after a state was saved."""


def run(recipe: Path, out: Path) -> None:
    from mergekit.merge import run_merge  # the wrapped one, as mergekit-yaml calls it

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(config, str(out), MergeOptions(quiet=True))


@pytest.fixture
def kill_after(monkeypatch):
    """kill_after(k): the next run dies right after iteration k's state is saved."""
    original = Checkpointer.save

    def arm(k: int) -> None:
        def save(self, loop, history, stopped):
            original(self, loop, history, stopped)
            if history[-1].t == k:
                raise Killed(f"killed after iteration {k}")

        monkeypatch.setattr(Checkpointer, "save", save)

    yield arm
    monkeypatch.setattr(Checkpointer, "save", original)


@pytest.fixture
def iterations_run(monkeypatch):
    """The iteration numbers the loop actually computes."""
    seen: list[int] = []
    original = mergekit_fw.fw.loop.FrankWolfe.iteration

    def iteration(self, t):
        seen.append(t)
        return original(self, t)

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "iteration", iteration)
    return seen


def recipe_for(zoo, path: Path, **extra) -> Path:
    params = dict(
        calibration=f"{zoo['calib']}/add.jsonl", iterations=ITERATIONS, line_search_evals=4
    )
    params.update(extra)
    return write_recipe(path, zoo["base"], [zoo["reverse"], zoo["add"], zoo["count"]], **params)


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory):
    """Uninterrupted runs, hard and soft: the bytes every resumed run must reproduce."""
    root = tmp_path_factory.mktemp("resume_ref")
    outs = {}
    for name, extra in {"hard": {}, "soft": {"variant": "soft", "inner_steps": 3}}.items():
        recipe = recipe_for(zoo, root / f"{name}.yaml", **extra)
        run(recipe, root / name)
        outs[name] = root / name
    return outs


@pytest.mark.parametrize("k", [0, 1, 2])
def test_kill_and_resume_writes_the_same_bytes(
    k, zoo, reference, tmp_path, kill_after, iterations_run, caplog
):
    recipe = recipe_for(zoo, tmp_path / "fw.yaml")
    out = tmp_path / "out"
    kill_after(k)
    with pytest.raises(Killed):
        run(recipe, out)
    assert not out.exists()  # the pre-pass writes nothing into OUT
    saved = loop_state.load(state_folder(out))
    assert saved is not None and saved[0].next_t == k + 1
    assert iterations_run == list(range(k + 1))
    iterations_run.clear()
    kill_after(-1)  # disarmed
    with caplog.at_level(logging.WARNING, logger="mergekit_fw"):
        run(recipe, out)
    assert f"Resuming the pre-pass from {state_folder(out)} at iteration {k + 1}" in caplog.text
    assert iterations_run == list(range(k + 1, ITERATIONS))  # nothing recomputed
    expected = (reference["hard"] / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == expected
    plan, ref_plan = FWPlan.load(out / PLAN_FILE), FWPlan.load(reference["hard"] / PLAN_FILE)
    assert plan.coefficients == ref_plan.coefficients
    assert [r.model_dump() for r in plan.iterations] == [
        r.model_dump() for r in ref_plan.iterations
    ]
    assert not state_folder(out).exists()  # removed once fw_plan.json is written


def test_soft_variant_resumes_to_the_same_bytes(zoo, reference, tmp_path, kill_after):
    recipe = recipe_for(zoo, tmp_path / "fw.yaml", variant="soft", inner_steps=3)
    out = tmp_path / "out"
    kill_after(1)
    with pytest.raises(Killed):
        run(recipe, out)
    kill_after(-1)
    run(recipe, out)
    expected = (reference["soft"] / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == expected


def test_theta_is_saved_because_recomputing_it_changes_the_bits(zoo, tmp_path, kill_after):
    """sum_k c_k theta_k is not bitwise the iterate the loop holds: that is why theta itself
    is part of the state (a resume from the coefficients alone would write other bytes)."""
    recipe = recipe_for(zoo, tmp_path / "fw.yaml")
    kill_after(2)
    with pytest.raises(Killed):
        run(recipe, tmp_path / "out")
    state, _ = loop_state.load(state_folder(tmp_path / "out"))
    paths = [zoo["base"], zoo["reverse"], zoo["add"], zoo["count"]]
    vertices = [load_file(str(Path(p) / "model.safetensors")) for p in paths]
    differs = 0
    for i, name in enumerate(state.theta):  # rows of the coefficients follow the slots
        rebuilt = torch.zeros_like(state.theta[name])
        for k in range(len(paths)):
            rebuilt.add_(vertices[k][name], alpha=float(state.coefficients[i, k]))
        differs += int(not torch.equal(rebuilt, state.theta[name]))
    assert differs > 0


def test_changed_inputs_start_over(zoo, tmp_path, kill_after, iterations_run, caplog):
    calib = tmp_path / "calib.jsonl"
    calib.write_text(Path(zoo["calib"], "add.jsonl").read_text())
    recipe = recipe_for(zoo, tmp_path / "fw.yaml", calibration=str(calib))
    out = tmp_path / "out"
    kill_after(1)
    with pytest.raises(Killed):
        run(recipe, out)
    kill_after(-1)
    lines = calib.read_text().splitlines()
    calib.write_text("\n".join(lines[:-1]) + "\n")  # one sample fewer
    iterations_run.clear()
    with caplog.at_level(logging.WARNING, logger="mergekit_fw"):
        run(recipe, out)
    assert "the inputs changed: calibration data" in caplog.text
    assert iterations_run[0] == 0


def test_changed_settings_are_named(zoo, tmp_path, kill_after, iterations_run, caplog):
    out = tmp_path / "out"
    kill_after(0)
    with pytest.raises(Killed):
        run(recipe_for(zoo, tmp_path / "a.yaml", seed=1), out)
    kill_after(-1)
    iterations_run.clear()
    with caplog.at_level(logging.WARNING, logger="mergekit_fw"):
        run(recipe_for(zoo, tmp_path / "b.yaml", seed=2), out)
    assert "parameters.seed (1 -> 2)" in caplog.text and iterations_run[0] == 0


def test_a_changed_candidate_file_starts_over(zoo, tmp_path, kill_after, iterations_run, caplog):
    import shutil

    copy = tmp_path / "add_copy"
    shutil.copytree(zoo["add"], copy)
    recipe = write_recipe(
        tmp_path / "fw.yaml", zoo["base"], [zoo["reverse"], str(copy)],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=3,
    )  # fmt: skip
    out = tmp_path / "out"
    kill_after(0)
    with pytest.raises(Killed):
        run(recipe, out)
    kill_after(-1)
    tensors = load_file(str(copy / "model.safetensors"))  # same layout, other values
    from safetensors.torch import save_file

    save_file({k: v * 1.01 for k, v in tensors.items()}, str(copy / "model.safetensors"))
    iterations_run.clear()
    with caplog.at_level(logging.WARNING, logger="mergekit_fw"):
        run(recipe, out)
    assert f"model {copy} (changed: model.safetensors)" in caplog.text
    assert iterations_run[0] == 0


@pytest.mark.parametrize("how", ["flag", "env"])
def test_no_resume_starts_over(how, zoo, tmp_path, kill_after, iterations_run, monkeypatch):
    recipe = recipe_for(zoo, tmp_path / "fw.yaml", iterations=2)
    out = tmp_path / "out"
    kill_after(0)
    with pytest.raises(Killed):
        run(recipe, out)
    kill_after(-1)
    iterations_run.clear()
    if how == "env":
        monkeypatch.setenv("MERGEKIT_FW_NO_RESUME", "1")
        run(recipe, out)
    else:
        with requested(resume=False):
            run(recipe, out)
    assert iterations_run == [0, 1]


def test_a_kill_during_the_write_leaves_no_fw_plan(zoo, tmp_path, monkeypatch):
    recipe = recipe_for(zoo, tmp_path / "fw.yaml", iterations=2)
    out = tmp_path / "out"

    def die(*args, **kwargs):
        raise Killed("killed while writing the card")

    monkeypatch.setattr("mergekit_fw.report.card.report_after_merge", die)
    with pytest.raises(Killed):
        run(recipe, out)
    assert (out / "model.safetensors").exists() and not (out / PLAN_FILE).exists()
    assert (state_folder(out) / loop_state.STATE_FILE).exists()  # the pre-pass is kept
    monkeypatch.undo()
    run(recipe, out)
    assert (out / PLAN_FILE).exists() and not state_folder(out).exists()


def test_a_kill_inside_mergekit_leaves_no_fw_plan(zoo, tmp_path, monkeypatch):
    recipe = recipe_for(zoo, tmp_path / "fw.yaml", iterations=2)
    out = tmp_path / "out"
    from mergekit.io.tasks import SaveTensor

    def die(self, *args, **kwargs):
        raise Killed("killed while mergekit writes tensors")

    monkeypatch.setattr(SaveTensor, "execute", die)
    with pytest.raises(Killed):
        run(recipe, out)
    assert not (out / PLAN_FILE).exists()


def test_a_full_disk_is_one_clear_error(zoo, tmp_path, monkeypatch):
    import errno

    recipe = recipe_for(zoo, tmp_path / "fw.yaml", iterations=2)
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors"))

    monkeypatch.setattr("mergekit.io.tensor_writer.TensorWriter._write_shard_task", full)
    with pytest.raises(FWConfigError, match=r"No space left on device.*incomplete \(no fw_plan"):
        run(recipe, out)
    assert not (out / PLAN_FILE).exists()


def test_a_full_disk_while_saving_state_is_one_clear_error(zoo, tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop_state, "save_file", full)
    with pytest.raises(FWConfigError, match=r"Could not save the pre-pass state.*No space left"):
        run(recipe_for(zoo, tmp_path / "fw.yaml", iterations=2), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not state_folder(tmp_path / "out").exists()


def test_a_read_only_output_is_refused_before_the_pre_pass(zoo, tmp_path, monkeypatch):
    import errno

    class ReadOnly(type(Path())):
        def mkdir(self, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(self))

    import mergekit_fw.mergekit.resume as resume

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "run", lambda self: 1 / 0)
    monkeypatch.setattr(resume, "state_folder", lambda out: ReadOnly(str(out) + ".fw-state"))
    with pytest.raises(FWConfigError, match=r"Cannot write next to the output.*Read-only"):
        run(recipe_for(zoo, tmp_path / "fw.yaml", iterations=2), tmp_path / "out")


def test_a_second_run_into_the_same_output_refuses(zoo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "run", lambda self: 1 / 0)
    with OutputGuard(str(out)):  # the first run, still going
        with pytest.raises(FWConfigError, match=r"Another frank_wolfe run \(pid \d+\) is writing"):
            run(recipe_for(zoo, tmp_path / "fw.yaml", iterations=2), out)
        assert state_folder(out).exists()  # the first run's folder is left alone
    assert not out.exists()
