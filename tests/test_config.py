"""Options under `parameters:`: typos and bad values fail with a message that names the fix."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from mergekit_fw.mergekit.method import FrankWolfeMerge
from mergekit_fw.settings import FWConfigError, FWSettings


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(FWConfigError, match=r"Unknown key 'iteration'.*Did you mean 'iterations'"):
        FWSettings.from_parameters({"calibration": "c.jsonl", "iteration": 10})


@pytest.mark.parametrize(
    "params, message",
    [
        ({"iterations": 3}, r"parameters\.calibration is required"),
        ({"calibration": "c"}, r"parameters\.iterations is required"),
        ({"calibration": "c", "iterations": 0}, r"parameters\.iterations"),
        (
            {"calibration": "c", "iterations": 2, "lmo": "dot"},
            r"parameters\.lmo.*'inner' or 'cosine'",
        ),
        ({"calibration": "c", "iterations": 2, "step_size": 1.5}, r"parameters\.step_size"),
        ({"calibration": "c", "iterations": [1, 2]}, r"single value"),
    ],
)
def test_bad_values(params, message):
    with pytest.raises(FWConfigError, match=message):
        FWSettings.from_parameters(params)


def test_mergekit_spec_is_derived_from_the_schema():
    spec = FrankWolfeMerge.spec
    names = [p.name for p in spec.parameters]
    assert names == FWSettings.keys()
    required = {p.name for p in spec.parameters if p.required}
    assert required == {"calibration", "iterations"}
    lmo = next(p for p in spec.parameters if p.name == "lmo")
    with pytest.raises(ValidationError):
        lmo.validate("dot")


@pytest.mark.parametrize(
    "options, named",
    [
        ({"variant": "soft", "zero_vertex": True}, "it does not apply with variant: soft"),
        ({"lmo": "cosine"}, "it does not apply with constraint: box. Use lmo: inner"),
        ({"fw_steps": "away", "merge_fn": "dare"}, "it does not apply with fw_steps: away"),
        ({"init": "task_arithmetic", "init_scale": 2.0}, "use 0 <= init_scale <= scale"),
    ],
)
def test_a_combination_is_refused_once_for_recipe_and_api(options, named):
    """One rule table (settings.CLASHES) and one error path: a recipe and the Python API
    get the same message; the task-arithmetic start is checked by the constraint set."""
    from mergekit_fw.settings import APIOptions

    with pytest.raises(FWConfigError, match=re.escape(named)) as recipe:
        FWSettings.from_parameters({"calibration": "c", "iterations": 1, **options})
    with pytest.raises(FWConfigError) as api:
        APIOptions.from_options({"iterations": 1, **options})
    assert api.value.message == recipe.value.message


def test_a_bad_value_names_the_recipe_key_or_the_api_option():
    from mergekit_fw.settings import APIOptions

    with pytest.raises(FWConfigError, match=r"parameters\.step_size: .* \(got 1\.5\)"):
        FWSettings.from_parameters({"calibration": "c", "iterations": 1, "step_size": 1.5})
    with pytest.raises(FWConfigError, match=r"option step_size: .* \(got 1\.5\)"):
        APIOptions.from_options({"iterations": 1, "step_size": 1.5})


def test_options_a_choice_ignores_are_named_not_refused():
    """Set away from their defaults where the other choices ignore them: one line each, so
    the recipe and the API can warn (sweeps across variants keep running)."""
    from mergekit_fw.settings import FWSettings

    settings = FWSettings(calibration="x", iterations=1, topk=3, merge_density=0.5,
                          constraint="hull", scale=2.0)  # fmt: skip
    assert settings.unused() == [
        "topk only applies with variant: soft, so it is ignored here",
        "merge_density only applies with merge_fn: ties | dare, so it is ignored here",
        "scale only applies with constraint: box | simplex, so it is ignored here",
    ]
    assert FWSettings(calibration="x", iterations=1, variant="soft", topk=3).unused() == []
    assert FWSettings(calibration="x", iterations=1).unused() == []


def test_the_api_defaults_warn_of_nothing():
    """frank_wolfe_merge passes every keyword: at their defaults none is 'ignored'."""
    import inspect

    from mergekit_fw.api import frank_wolfe_merge
    from mergekit_fw.settings import APIOptions

    params = inspect.signature(frank_wolfe_merge).parameters
    defaults = {k: p.default for k, p in params.items()
                if k in APIOptions.model_fields and p.default is not None}  # fmt: skip
    assert APIOptions.from_options(defaults).unused() == []
