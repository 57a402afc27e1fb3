"""Bad input: a clear error before any gradient work, and no output that looks complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mergekit_fw.fw.loop
from mergekit_fw.cli import toy
from mergekit_fw.settings import FWConfigError
from tests.helpers import run_merge, write_recipe


@pytest.fixture
def no_gradients(monkeypatch):
    """Fail loudly if the FW loop starts: every error below must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("gradient work started before the input was rejected")

    monkeypatch.setattr(mergekit_fw.fw.loop.FrankWolfe, "run", refuse)


@pytest.fixture(scope="module")
def other_size(zoo, tmp_path_factory) -> str:
    """A candidate of another hidden size: another architecture, not a vocabulary issue."""
    model = toy.make_model(seed=4, hidden=48)
    return toy.save(model, toy.build_tokenizer(), tmp_path_factory.mktemp("size") / "size")


@pytest.fixture(scope="module")
def wide_vocab(zoo, tmp_path_factory) -> str:
    """A candidate whose vocabulary (and so embedding shape) differs from the base."""
    model = toy.make_model(seed=3, vocab=toy.make_model().config.vocab_size + 8)
    return toy.save(model, toy.build_tokenizer(), tmp_path_factory.mktemp("wide") / "wide")


@pytest.fixture(scope="module")
def other_tokenizer(zoo, tmp_path_factory) -> str:
    """Same shapes, different token ids: a silently wrong merge if not caught."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(zoo["add"])
    path = tmp_path_factory.mktemp("tok") / "shuffled"
    toy.save(model, toy.build_tokenizer(), path)
    tok_file = path / "tokenizer.json"
    data = json.loads(tok_file.read_text())
    vocab = data["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    tok_file.write_text(json.dumps(data))
    return str(path)


CASES = {
    "unknown key": (
        lambda z, **_: {
            "calibration": f"{z['calib']}/add.jsonl",
            "iterations": 2,
            "step_sise": 0.1,
        },
        r"Unknown key 'step_sise'.*Did you mean 'step_size'",
    ),
    "missing calibration": (
        lambda z, **_: {"calibration": f"{z['calib']}/nope.jsonl", "iterations": 2},
        r"Calibration file not found",
    ),
    "empty calibration": (
        lambda z, tmp, **_: {"calibration": str(_empty(tmp)), "iterations": 2},
        r"is empty",
    ),
    "no target tokens": (
        lambda z, tmp, **_: {"calibration": str(_no_targets(tmp)), "iterations": 2},
        r"no target tokens",
    ),
}


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.jsonl"
    path.write_text("")
    return path


def _no_targets(tmp: Path) -> Path:
    path = tmp / "no_targets.jsonl"
    path.write_text('{"prompt": "ab>", "response": "ba"}\n{"prompt": "abc>", "response": " "}\n')
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_parameters(case, zoo, tmp_path, no_gradients):
    params, message = CASES[case]
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["add"]], **params(zoo, tmp=tmp_path)
    )
    with pytest.raises(FWConfigError, match=message):
        run_merge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_candidate_with_other_shapes(zoo, wide_vocab, tmp_path, no_gradients):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        zoo["base"],
        [zoo["add"], wide_vocab],
        calibration=f"{zoo['calib']}/add.jsonl",
        iterations=2,
    )
    with pytest.raises(
        FWConfigError,
        match=r"tensor (lm_head|model.embed_tokens).weight has shape \[57, 32\], the base \[49, 32\]",
    ):
        run_merge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_candidate_of_another_size_is_not_called_a_vocabulary_problem(
    zoo, other_size, tmp_path, no_gradients
):
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["add"], other_size],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    with pytest.raises(FWConfigError) as error:
        run_merge(recipe, tmp_path / "out")
    assert f"model {other_size}" in str(error.value)
    assert "another architecture or size" in str(error.value)
    assert "vocabulary" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_candidate_with_other_vocabulary(zoo, other_tokenizer, tmp_path, no_gradients):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        zoo["base"],
        [other_tokenizer],
        calibration=f"{zoo['calib']}/add.jsonl",
        iterations=2,
    )
    with pytest.raises(FWConfigError, match="different tokenizer vocabulary"):
        run_merge(recipe, tmp_path / "out")


def test_model_path_that_does_not_exist(zoo, tmp_path, no_gradients):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        zoo["base"],
        ["./no/such/model"],
        calibration=f"{zoo['calib']}/add.jsonl",
        iterations=2,
    )
    with pytest.raises(FWConfigError, match=r"model \./no/such/model: no such model folder"):
        run_merge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stock_cli_prints_the_error_without_a_traceback(zoo, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        zoo["base"],
        [zoo["add"]],
        calibration=f"{zoo['calib']}/add.jsonl",
        iterations=2,
        iteratons=3,
    )
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mergekit-yaml")), str(recipe), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Error: Unknown key 'iteratons'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_per_model_parameters_and_slices_are_rejected(zoo, tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "frank_wolfe", "base_model": zoo["base"],
        "models": [{"model": zoo["add"], "parameters": {"weight": 0.5}}],
        "parameters": {"calibration": f"{zoo['calib']}/add.jsonl", "iterations": 2},
    }))  # fmt: skip
    with pytest.raises(FWConfigError, match="takes no per-model parameters"):
        run_merge(recipe, tmp_path / "out")
    assert torch.__version__  # keep import used
