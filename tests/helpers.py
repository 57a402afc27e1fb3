"""Helpers shared by several test modules: recipes, merges, the soft-loop toy, adapters.

Fixtures live in conftest.py (pytest finds them); plain functions and classes live here and
are imported as `from tests.helpers import ...`. No test module imports another.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

MERGEKIT_YAML = str(Path(sys.executable).with_name("mergekit-yaml"))


# -- recipes and merges -------------------------------------------------------------------
def write_recipe(path: Path, base: str, models: list[str], **parameters) -> Path:
    """A frank_wolfe recipe as a user would write it."""
    recipe = {
        "merge_method": "frank_wolfe",
        "base_model": base,
        "models": [{"model": m} for m in models],
        "dtype": "float32",
        "parameters": parameters,
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def config(base, models, **params):
    """A frank_wolfe MergeConfiguration over local models (for prepare / run_fw_merge)."""
    from mergekit.config import MergeConfiguration

    return MergeConfiguration.model_validate(
        {
            "merge_method": "frank_wolfe",
            "base_model": base,
            "models": [{"model": m} for m in models],
            "dtype": "float32",
            "parameters": params,
        }
    )


def mergekit_yaml(recipe: Path, out: Path, *extra: str, env: dict | None = None):
    """The stock `mergekit-yaml` in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [MERGEKIT_YAML, str(recipe), str(out), *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )  # fmt: skip


def run_merge(recipe: Path, out: Path):
    """mergekit's `run_merge` in-process (the wrapped one, as mergekit-yaml calls it)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    parsed = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(parsed, str(out), MergeOptions(quiet=True))


def fw_merge(zoo: dict[str, str], out: Path, experts: list[str], iterations: int = 2) -> Path:
    """A real frank_wolfe merge of the session's tiny zoo (conftest), in-process: mergekit
    writes the model, FW its plan, plots and card."""
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.runner import run_fw_merge

    merge = config(
        zoo["base"],
        [zoo[e] for e in experts],
        calibration=f"{zoo['calib']}/{experts[0]}.jsonl",
        iterations=iterations,
        constraint="hull",
    )
    run_fw_merge(merge, str(out), MergeOptions(quiet=True, random_seed=0))
    return out


def calibration_loss(model_path: str, calibration: str) -> float:
    """A written model's calibration loss, computed as the pre-pass computes it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.data.calibration import load_calibration
    from mergekit_fw.fw.objectives import CausalLMObjective, evaluate

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    calib = load_calibration(calibration, tok, 512)
    batches = make_batches(calib, 8, tok.pad_token_id, "cpu")
    names = [t.name for t in calib.tasks]
    return evaluate(model, CausalLMObjective(), batches, names, grad=False, quiet=True).total


# -- a toy where the best combination is known: loss = ||theta - target||^2 ----------------
class Vector(torch.nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(value.clone())

    def forward(self, **_inputs):
        return SimpleNamespace(logits=self.w)


class Distance:
    """Objective stand-in: squared distance of the parameter to each task's target."""

    needs_labels = sequence_level = False

    def __init__(self, targets: list[torch.Tensor]):
        self.targets = targets

    def batch_loss_sum(self, model, batch):
        return ((model().logits - self.targets[batch.task]) ** 2).sum()


class Pool:
    def __init__(self, vertices: list[torch.Tensor]):
        self.vertices, self.labels = vertices, [f"v{i}" for i in range(len(vertices))]
        self.refs = self.labels

    def __len__(self):
        return len(self.vertices)

    def tensor(self, k, name):
        return self.vertices[k].clone()


# -- LoRA adapters of the tiny zoo's base -------------------------------------------------
ADAPTERS = {  # task -> LoraConfig options (one rsLoRA of another rank, one with o_proj too)
    "reverse": dict(r=4, lora_alpha=8),
    "add": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]),
    "count": dict(r=8, lora_alpha=16, use_rslora=True),
}


def make_adapter(base: str, out: Path, seed: int, task: str | None = None, **options) -> str:
    """A PEFT LoRA of `base`: random non-zero lora_B, then a few steps on `task`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mergekit_fw.cli import toy

    options.setdefault("target_modules", ["q_proj", "v_proj"])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **options))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    if task:
        records = toy.task_records(task, 200, seed=seed)
        toy.train(peft, toy.build_tokenizer(), records, steps=20, lr=3e-3, seed=seed)
    peft.save_pretrained(str(out))
    return str(out)


def write_manifest(path: Path, adapters: list[str]) -> str:
    entries = [{"path": os.path.relpath(a, path.parent)} for a in adapters]
    path.write_text(yaml.safe_dump({"adapters": entries}))
    return str(path)


def densified(base: str, loras: dict[str, str]) -> list[str]:
    """The same adapters as mergekit's `base+adapter` candidates."""
    return [f"{base}+{loras[t]}" for t in ADAPTERS]


def run_in_process(recipe: Path, out: Path, cache: Path | None = None):
    """run_fw_merge of a recipe file; returns its FWPlan."""
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    from mergekit_fw.mergekit.runner import run_fw_merge

    parsed = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    options = MergeOptions(quiet=True, lora_merge_cache=str(cache) if cache else None)
    return run_fw_merge(parsed, str(out), options)


def check(zoo, tmp_path, adapter_dirs: list[str] | None, models=None, **parameters):
    """check_recipe of a recipe over the zoo's base with these adapters (no calibration)."""
    from mergekit.config import MergeConfiguration

    from mergekit_fw.mergekit.checks import check_recipe

    if adapter_dirs is not None:
        parameters["adapters"] = write_manifest(tmp_path / "m.yaml", adapter_dirs)
    path = write_recipe(
        tmp_path / "r.yaml", zoo["base"], models or [zoo["base"]],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=1, **parameters,
    )  # fmt: skip
    parsed = MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))
    return check_recipe(parsed, with_calibration=False)


def start_problem(zoo: dict[str, str], paths: list[str], calibration: str = "two_tasks.yaml"):
    """(model, slots, pool, problem) of the zoo's base over the vertices `paths` (base
    first), in memory: what init: auto's start grid scores (fw/start_grid.py)."""
    from mergekit.common import ModelReference
    from mergekit.io.tasks import LoaderCache
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.data.calibration import load_calibration
    from mergekit_fw.fw.loop import build_slots
    from mergekit_fw.fw.objectives import CausalLMObjective
    from mergekit_fw.fw.problem import CalibrationProblem
    from mergekit_fw.pool.vertices import VertexPool

    LoaderCache().setup(MergeOptions())
    pool = VertexPool([ModelReference.parse(p) for p in paths], torch.device("cpu"),
                      torch.float32)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(paths[0], dtype=torch.float32).eval()
    slots = build_slots(model, set(pool.tensor_names(0)))
    tok = AutoTokenizer.from_pretrained(paths[0])
    calib = load_calibration(f"{zoo['calib']}/{calibration}", tok, 512)
    batches = make_batches(calib, 8, tok.pad_token_id, "cpu")
    problem = CalibrationProblem(CausalLMObjective(), batches, [t.name for t in calib.tasks])
    return model, slots, pool, problem
