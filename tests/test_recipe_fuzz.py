"""A recipe fuzzer: random mutations of a valid frank_wolfe recipe give exit status 1, one
`Error:` line, no traceback and no output folder, or a run that passes validation.

Most examples stop where the pre-pass would start (FrankWolfe.run replaced by a sentinel), so
the whole validation path of `mergekit-fw check` and `mergekit-fw run` is exercised in
process, fast; a few examples (mutations of cheap options only) do full runs.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from unittest import mock

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mergekit_fw.fw.loop
from mergekit_fw.cli.main import main
from mergekit_fw.mergekit.resume import state_folder
from mergekit_fw.settings import FWSettings

COUNTER = itertools.count()
ODD_PATHS = [
    "", " ", "/", "/nonexistent/model", "../../..", "~", "a b/ü ñ", "x" * 300, "/dev/null",
    "org/model", "./", "\\\\server\\share", "/etc/passwd", "C:\\models\\x", "file://x", "-",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(ODD_PATHS),
    st.sampled_from(["inner", "cosine", "soft", "hard", "model", "tensor", "float16", "bfloat16"]),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=2),  # [] included: empty lists
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=2),
)
# options whose large values are legitimate but slow: left out of the full-run examples
COSTLY = {"iterations", "inner_steps", "line_search_evals", "topk", "max_length", "batch_size"}


def valid_recipe(zoo) -> dict:
    return {
        "merge_method": "frank_wolfe",
        "base_model": zoo["base"],
        "models": [{"model": zoo["reverse"]}, {"model": zoo["add"]}],
        "dtype": "float32",
        "parameters": {"calibration": f"{zoo['calib']}/add.jsonl", "iterations": 1},
    }


@st.composite
def mutated(draw, base: dict) -> dict:
    recipe = yaml.safe_load(yaml.safe_dump(base))  # deep copy
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["top", "parameters", "model", "model_entry"]))
        if where == "top":
            holder = recipe
        elif where == "parameters":
            holder = recipe.setdefault("parameters", {})
            if not isinstance(holder, dict):
                holder = recipe["parameters"] = {}
        else:
            models = recipe.get("models")
            if not isinstance(models, list) or not models or not isinstance(models[0], dict):
                continue
            holder = models[draw(st.integers(0, len(models) - 1))]
            if not isinstance(holder, dict):
                continue
        keys = list(holder) + (FWSettings.keys() if where == "parameters" else [])
        action = draw(st.sampled_from(["set", "delete", "unknown"]))
        if action == "unknown":
            holder[draw(st.sampled_from(["extra", "step_sise", "Models", "x-y", "0"]))] = draw(
                VALUES
            )
        elif action == "delete" and holder:
            holder.pop(draw(st.sampled_from(sorted(holder))), None)
        elif keys:
            holder[draw(st.sampled_from(sorted(set(keys))))] = draw(VALUES)
    return recipe


class Reached(Exception):
    """The pre-pass would start: validation accepted the recipe."""


def write(recipe: dict, root: Path) -> tuple[Path, Path]:
    case = root / f"case{next(COUNTER)}"
    case.mkdir()
    path = case / "fw.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path, case / "out"


def assert_clean_failure(result, out: Path, what: str) -> None:
    assert result.exit_code == 1, f"{what}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, f"{what}:\n{result.output}"
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"{what}: not one Error line:\n{result.output}"
    assert not out.exists() and not state_folder(out).exists(), what


def outcome(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=True)


@settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(data=st.data())
def test_fuzzed_recipes_fail_cleanly_or_validate(data, zoo, tmp_path):
    recipe = data.draw(mutated(valid_recipe(zoo)))
    path, out = write(recipe, tmp_path)
    checked = outcome(["check", str(path)])
    if checked.exit_code != 0:
        assert_clean_failure(checked, out, f"check {recipe}")
    with mock.patch.object(mergekit_fw.fw.loop.FrankWolfe, "run", side_effect=Reached):
        ran = outcome(["run", str(path), str(out)])
    if isinstance(ran.exception, Reached) or ran.exit_code == 0:  # e.g. merge_method: linear
        shutil.rmtree(out, ignore_errors=True)
        return
    assert ran.exception is None or isinstance(ran.exception, SystemExit), (
        f"run {recipe}: {ran.exception!r}\n{ran.output}"
    )
    assert_clean_failure(ran, out, f"run {recipe}")


@st.composite
def cheap_mutation(draw, base: dict) -> dict:
    recipe = yaml.safe_load(yaml.safe_dump(base))
    key = draw(st.sampled_from(sorted(set(FWSettings.keys()) - COSTLY - {"calibration"})))
    recipe["parameters"][key] = draw(SCALARS)
    return recipe


@settings(
    max_examples=5, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(data=st.data())
def test_fuzzed_options_run_or_fail_cleanly(data, zoo, tmp_path):
    recipe = data.draw(cheap_mutation(valid_recipe(zoo)))
    path, out = write(recipe, tmp_path)
    ran = outcome(["run", str(path), str(out)])
    if ran.exit_code == 0:
        assert (out / "fw_plan.json").exists(), ran.output
        return
    assert ran.exception is None or isinstance(ran.exception, SystemExit), (
        f"run {recipe}: {ran.exception!r}\n{ran.output}"
    )
    assert_clean_failure(ran, out, f"run {recipe}")
