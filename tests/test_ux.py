"""A new user's first hour (issue 23): `check` rejects what the run would reject, and what
the tools print is worded for the command that was run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mergekit_fw.cli.main import main
from mergekit_fw.settings import FWConfigError
from tests.helpers import write_recipe


def _recipe(zoo, tmp_path: Path, **top) -> Path:
    path = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    recipe = yaml.safe_load(path.read_text())
    recipe.update(top)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _run(recipe: Path, out: Path) -> None:
    """What mergekit-yaml does: the parsed recipe, and its text as config_source."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    text = recipe.read_text()
    parsed = MergeConfiguration.model_validate(yaml.safe_load(text))
    run_merge(parsed, str(out), MergeOptions(quiet=True), config_source=text)


def _check(*args: str):
    return CliRunner().invoke(main, ["check", *args])


@pytest.mark.parametrize(
    "top, message",
    [
        ({"dtype": "float33"}, r"dtype: 'float33' is not a dtype.*Did you mean 'float32'"),
        ({"dtype": "int64"}, r"dtype: 'int64' is not a dtype"),
        ({"out_dtype": "bf16"}, r"out_dtype: 'bf16' is not a dtype"),
        ({"chat_template": "chatmlx"}, r"chat_template: 'chatmlx' is neither"),
        ({"dtpye": "float16"}, r"unknown top-level key 'dtpye'.*Did you mean 'dtype'"),
    ],
)
def test_check_rejects_what_the_run_rejects(zoo, tmp_path, top, message):
    recipe = _recipe(zoo, tmp_path, **top)
    result = _check(str(recipe), "--no-calibration")
    assert result.exit_code == 1, result.output
    assert "OK:" not in result.output
    assert re.search(message, result.output), result.output
    with pytest.raises(FWConfigError, match=message):  # the run stops at the same line
        _run(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_duplicated_key_is_an_error(zoo, tmp_path):
    recipe = _recipe(zoo, tmp_path)
    text = recipe.read_text().replace("  iterations: 2\n", "  iterations: 2\n  iterations: 5\n")
    recipe.write_text(text)
    result = _check(str(recipe), "--no-calibration")
    assert result.exit_code == 1
    assert "key 'iterations' appears twice" in result.output


def test_a_null_option_says_to_leave_it_out(zoo, tmp_path):
    recipe = _recipe(zoo, tmp_path)
    recipe.write_text(
        recipe.read_text().replace("  iterations: 2\n", "  iterations: 2\n  adapters:\n")
    )
    result = _check(str(recipe), "--no-calibration")
    assert result.exit_code == 1
    assert "parameters.adapters is empty (null)" in result.output, result.output


def test_check_prints_options_as_yaml(zoo, tmp_path):
    result = _check(str(_recipe(zoo, tmp_path)), "--no-calibration")
    assert result.exit_code == 0, result.output
    assert "adapters: null" in result.output and "zero_vertex: false" in result.output
    assert "=None" not in result.output


def test_a_run_ends_with_a_summary_in_plain_lines(zoo, tmp_path, capfd):
    """Where the merge is, the start, the loss before and after with its unit, the time;
    the package's messages as plain lines, not logging's `INFO:mergekit_fw:` form."""
    import logging

    recipe = _recipe(zoo, tmp_path)
    logging.basicConfig(level=logging.WARNING)  # what mergekit-yaml does
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    parsed = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(parsed, str(tmp_path / "out"), MergeOptions(random_seed=0))
    err = capfd.readouterr().err
    assert f"Frank-Wolfe merge written to {tmp_path / 'out'}" in err
    assert re.search(r"  start: \S+.*\(init: auto, best of \d+ starts\)", err), err
    assert re.search(r"  calibration loss: [\d.]+ -> [\d.]+ nats/sample \(2 iterations", err)
    assert re.search(r"  time: [\d.]+ s in all", err)
    assert re.search(r"^FW t=0: loss [\d.]+ nats/sample  gap", err, re.M)
    assert "mergekit_fw:" not in err and "torch_dtype" not in err
    assert "  start: 21/21" not in err and not re.search(r"^  start: \d+/\d+ in", err, re.M)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| calibration loss (nats/sample) |" in card


def test_the_start_over_hint_fits_the_command():
    """mergekit-yaml rejects --no-resume: its hint is the environment variable."""
    from mergekit_fw.mergekit.resume import requested, start_over_hint

    assert "MERGEKIT_FW_NO_RESUME=1 mergekit-yaml" in start_over_hint()
    assert "--no-resume" not in start_over_hint()
    with requested(resume=True):  # mergekit-fw run / plan
        assert start_over_hint() == "add --no-resume to start over"


def test_run_help_shows_the_fw_options():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0, result.output
    assert "--no-resume" in result.output and "--plan PLAN" in result.output
    assert "--allow-crimes" in result.output  # and mergekit-yaml's own


def _tiny_api_problem():
    """A linear model, two fine-tunes as nn.Modules, an MSE loss: the API as a torch user
    meets it."""
    import torch

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    experts = []
    for shift in (0.1, -0.1):
        expert = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        expert.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(shift * torch.randn_like(p))
        experts.append(expert)
    x = torch.randn(16, 4)
    data = [(x, x.sum(dim=1, keepdim=True))]

    def loss(model, batch):
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    return base, experts, loss, data


def test_the_api_takes_modules_and_has_defaults(capsys):
    import inspect

    from mergekit_fw import frank_wolfe_merge

    signature = inspect.signature(frank_wolfe_merge)
    assert signature.parameters["iterations"].default == 10
    assert signature.parameters["constraint"].default == "box"
    assert "progress" in signature.parameters and frank_wolfe_merge.__doc__
    base, experts, loss, data = _tiny_api_problem()
    seen = []
    merged, plan = frank_wolfe_merge(base, experts, loss, data, iterations=2, progress=seen.append)
    assert [r.t for r in seen] == [0, 1] and len(plan.iterations) == 2
    assert set(merged) == set(base.state_dict())
    assert capsys.readouterr().err == ""  # a callable replaces the printing
    frank_wolfe_merge(base, experts, loss, data, iterations=2, progress="iterations")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(re.match(r"FW t=\d: loss [\d.]+  gap ", line) for line in err)


def test_the_api_speaks_of_the_api():
    import torch

    from mergekit_fw import frank_wolfe_merge

    base, experts, loss, data = _tiny_api_problem()
    with pytest.raises(FWConfigError, match=r"Did you mean 'iterations'") as typo:
        frank_wolfe_merge(base, experts, loss, data, iteratons=2)
    assert "batch_size" not in str(typo.value) and "max_length" not in str(typo.value)
    with pytest.raises(FWConfigError, match=r"does not take 'batch_size' \(a recipe option\)"):
        frank_wolfe_merge(base, experts, loss, data, batch_size=4)
    broken = {k: v.clone() for k, v in experts[0].state_dict().items()}
    broken["0.weight"][0, 0] = float("nan")
    with pytest.raises(FWConfigError) as nan:
        frank_wolfe_merge(base, [broken], loss, data, iterations=1)
    message = str(nan.value)
    assert "NaN" in message and "recipe" not in message and "written" not in message
    assert torch.isfinite(base[0].weight).all()


def test_the_demo_claims_only_what_its_table_shows():
    """The demo's conclusion is checked on its own numbers; the order of the two FW merges
    (a few hundredths apart, it flips between builds) is reported, not claimed."""
    from mergekit_fw.cli.demo import conclusion

    losses = {
        "base": [2.3, 1.4], "expert_reverse": [1.7, 2.8], "expert_add": [3.7, 1.2],
        "expert_count": [3.2, 3.6], "expert_sort": [3.4, 2.2], "task arithmetic": [2.1, 1.5],
        "TIES (density 0.9)": [2.2, 2.6], "frank-wolfe, hull (paper)": [1.82, 1.38],
        "frank-wolfe (defaults)": [1.83, 1.35],
    }  # fmt: skip
    lines = conclusion(losses)
    assert sum(line.startswith("- holds:") for line in lines) == 3
    assert any(line.startswith("- not claimed:") for line in lines)
    losses["frank-wolfe (defaults)"] = [2.1, 1.5]  # no longer ahead of task arithmetic
    assert any("NOT on this run: both Frank-Wolfe" in line for line in conclusion(losses))


def test_a_second_run_on_a_locked_output_refuses_before_its_checks(tmp_path, monkeypatch):
    import fcntl

    from mergekit_fw.mergekit import runner
    from mergekit_fw.mergekit.resume import LOCK_FILE, OutputGuard, state_folder

    out = tmp_path / "out"
    OutputGuard.check_free(str(out))  # nothing there: nothing created
    assert not state_folder(out).exists()
    state_folder(out).mkdir()
    with open(state_folder(out) / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 1234")
        held.flush()
        monkeypatch.setattr(runner, "checked_recipe", lambda *a, **k: pytest.fail("checked"))
        with pytest.raises(FWConfigError, match=r"Another frank_wolfe run \(pid 1234\)"):
            OutputGuard.check_free(str(out))


def test_rerunning_into_a_finished_merge_says_so(tmp_path, caplog):
    import logging
    import os
    import time

    from mergekit_fw.mergekit.resume import OutputGuard

    out = tmp_path / "out"
    out.mkdir()
    (out / "fw_plan.json").write_text("{}")
    (out / "model-00002-of-00002.safetensors").write_text("old")
    old = time.time() - 60
    for name in ("fw_plan.json", "model-00002-of-00002.safetensors"):
        os.utime(out / name, (old, old))
    with caplog.at_level(logging.WARNING, logger="mergekit_fw"):
        with OutputGuard(str(out)):
            (out / "fw_plan.json").write_text("{}")  # what this run writes
    assert "holds a finished frank_wolfe merge; this run overwrites it" in caplog.text
    assert "1 file(s) from an earlier merge" in caplog.text
    assert "model-00002-of-00002.safetensors" in caplog.text


def test_an_unreachable_hub_base_fails_at_once(monkeypatch):
    import socket
    import time

    from mergekit.common import ModelReference

    from mergekit_fw.mergekit.checks import _hub_reachable

    def unreachable(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    started = time.perf_counter()
    with pytest.raises(FWConfigError, match=r"not in the Hugging Face cache, and .* cannot be"):
        _hub_reachable(ModelReference.model_validate("no-such-org/no-such-model-23"))
    assert time.perf_counter() - started < 5
