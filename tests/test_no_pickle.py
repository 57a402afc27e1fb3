"""No pickle code runs: a `.bin` candidate goes through torch's weights-only loading, and a
`.bin` that carries code is refused without running it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from mergekit.config import MergeConfiguration
from mergekit.options import MergeOptions
from safetensors.torch import load_file

from mergekit_fw.cli import toy
from mergekit_fw.settings import FWConfigError
from tests.helpers import write_recipe


def run(recipe: Path, out: Path) -> None:
    from mergekit.merge import run_merge

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(config, str(out), MergeOptions(quiet=True))


@pytest.fixture(scope="module")
def bin_candidate(zoo, tmp_path_factory) -> str:
    """The `add` expert saved as pytorch_model.bin (a pickle), not safetensors."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(zoo["add"])
    path = tmp_path_factory.mktemp("bin") / "add_bin"
    model.save_pretrained(path)  # transformers 5 writes safetensors only: re-save as a pickle
    toy.build_tokenizer().save_pretrained(path)
    torch.save(
        {k: v.contiguous() for k, v in load_file(str(path / "model.safetensors")).items()},
        path / "pytorch_model.bin",
    )
    (path / "model.safetensors").unlink()
    assert (path / "pytorch_model.bin").exists() and not (path / "model.safetensors").exists()
    return str(path)


class Payload:
    """Unpickling this would run code (create a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_bin_candidate_is_loaded_weights_only(bin_candidate, zoo, tmp_path, monkeypatch):
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [zoo["reverse"], bin_candidate],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=2,
    )  # fmt: skip
    run(recipe, tmp_path / "out")
    assert calls, "the .bin candidate was not read through torch.load"
    # weights_only left at torch's default (True since torch 2.6) or set explicitly
    assert torch.serialization._default_to_weights_only(None) is True
    assert all(kwargs.get("weights_only", True) is True for kwargs in calls), calls
    assert all("pickle_module" not in kwargs for kwargs in calls), calls
    assert (tmp_path / "out" / "fw_plan.json").exists()


def test_a_bin_with_code_in_it_is_refused_and_never_runs(bin_candidate, zoo, tmp_path):
    import shutil

    evil = tmp_path / "evil"
    shutil.copytree(bin_candidate, evil)
    marker = tmp_path / "pwned"
    state = torch.load(evil / "pytorch_model.bin", weights_only=True)
    state["payload"] = Payload(str(marker))
    torch.save(state, evil / "pytorch_model.bin")
    recipe = write_recipe(
        tmp_path / "r.yaml", zoo["base"], [str(evil)],
        calibration=f"{zoo['calib']}/add.jsonl", iterations=1,
    )  # fmt: skip
    with pytest.raises(FWConfigError, match=r"evil: its pickled weights .* weights-only"):
        run(recipe, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out" / "fw_plan.json").exists()
