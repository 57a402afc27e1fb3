"""The Python API (`mergekit_fw.frank_wolfe_merge`): same plan as the recipe path, streamed
file candidates, include=, per-task heads, and clear errors before any iteration."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mergekit_fw import frank_wolfe_merge
from mergekit_fw.cli.toy_vit import TinyViT
from mergekit_fw.pool.state_dicts import StateDictPool
from mergekit_fw.settings import FWConfigError

ROOT = Path(__file__).resolve().parents[1]


# --- a tiny multi-task ViT problem: a shared encoder, one frozen head per task ------------
@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """Base encoder, 3 experts (a few seeded steps each on its own task), heads, data."""
    torch.manual_seed(0)
    base = TinyViT(dim=16, depth=1, heads=2, mlp=32)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(96, 8, 8, generator=gen)
    tasks = {  # three labellings of the same images
        "bright": (images.mean(dim=(1, 2)) > images.mean()).long(),
        "top": (images[:, :4].mean(dim=(1, 2)) > images[:, 4:].mean(dim=(1, 2))).long(),
        "left": (images[:, :, :4].mean(dim=(1, 2)) > images[:, :, 4:].mean(dim=(1, 2))).long(),
    }
    heads = {name: torch.nn.Linear(16, 2).requires_grad_(False) for name in tasks}
    experts, root = [], tmp_path_factory.mktemp("vit")
    for i, (name, labels) in enumerate(tasks.items()):
        expert = copy.deepcopy(base)
        opt = torch.optim.Adam(expert.parameters(), lr=1e-2)
        for _ in range(15):
            loss = F.cross_entropy(heads[name](expert(images[:64])), labels[:64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        state = {k: v.detach().clone() for k, v in expert.state_dict().items()}
        save_file(state, str(root / f"expert_{i}.safetensors"))
        experts.append(state)
    data = {
        name: [(images[s : s + 32], labels[s : s + 32]) for s in (64, 80)]
        for name, labels in tasks.items()
    }
    files = [str(root / f"expert_{i}.safetensors") for i in range(len(experts))]
    return {"base": base, "experts": experts, "files": files, "heads": heads, "data": data}


def head_loss(heads):
    def loss(model, batch, task):
        x, y = batch
        return F.cross_entropy(heads[task](model(x)), y)

    return loss


def test_state_dicts_and_files_give_the_same_plan(vit):
    """Candidates in memory or streamed from disk: the same merge, tensor for tensor."""
    args = dict(loss=head_loss(vit["heads"]), data=vit["data"], iterations=3)
    names = ["expert_0", "expert_1", "expert_2"]
    merged_a, plan_a = frank_wolfe_merge(vit["base"], vit["experts"], labels=names, **args)
    merged_b, plan_b = frank_wolfe_merge(vit["base"], vit["files"], **args)
    assert plan_a.coefficients == plan_b.coefficients
    assert [r.picks for r in plan_a.iterations] == [r.picks for r in plan_b.iterations]
    for name in merged_a:
        assert torch.equal(merged_a[name], merged_b[name]), name
    assert plan_a.final_loss < plan_a.iterations[0].loss  # it merged something useful
    assert plan_b.labels == ["base", "expert_0", "expert_1", "expert_2"]


def test_merge_is_the_plan_applied_and_the_model_is_left_at_the_base(vit):
    before = {k: v.clone() for k, v in vit["base"].state_dict().items()}
    merged, plan = frank_wolfe_merge(
        vit["base"], vit["experts"], head_loss(vit["heads"]), vit["data"], iterations=2
    )
    for name, row in plan.coefficients.items():
        expected = row[0] * before[name] + sum(c * e[name] for c, e in zip(row[1:], vit["experts"]))
        torch.testing.assert_close(merged[name], expected, atol=1e-5, rtol=1e-5)
    for name, value in vit["base"].state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in vit["base"].parameters())


def test_file_candidates_are_streamed_one_tensor_at_a_time(vit, monkeypatch):
    """No candidate tensor read from disk outlives the request for the next one."""
    live: list[weakref.ref] = []
    original = StateDictPool.tensor

    def tracked(self, k, name):
        alive = [ref for ref in live if ref() is not None]
        assert not alive, f"{len(alive)} vertex tensors still alive when loading {name}"
        x = original(self, k, name)
        if k > 0:
            live.append(weakref.ref(x))
        return x

    monkeypatch.setattr(StateDictPool, "tensor", tracked)
    _, plan = frank_wolfe_merge(
        vit["base"], vit["files"], head_loss(vit["heads"]), vit["data"],
        iterations=2, init="task_arithmetic",
    )  # fmt: skip
    assert len(plan.iterations) == 2 and len(live) > 0


def test_include_leaves_every_other_parameter_at_the_base(vit):
    chosen = {"blocks.0.fc1.weight", "blocks.0.fc1.bias", "blocks.0.qkv.weight"}
    merged, plan = frank_wolfe_merge(
        vit["base"], vit["files"], head_loss(vit["heads"]), vit["data"],
        include=lambda name: name in chosen, iterations=3,
    )  # fmt: skip
    assert set(plan.tensors) == chosen
    base = vit["base"].state_dict()
    changed = {name for name in merged if not torch.equal(merged[name], base[name])}
    assert changed and changed <= chosen
    assert all(torch.equal(merged[n], base[n]) for n in base if n not in chosen)


def test_task_reaches_the_loss_and_soft_per_task_selection_works(vit):
    seen = []
    heads = vit["heads"]

    def loss(model, batch, task):
        seen.append(task)
        x, y = batch
        return F.cross_entropy(heads[task](model(x)), y)

    _, plan = frank_wolfe_merge(
        vit["base"], vit["experts"], loss, vit["data"],
        iterations=2, variant="soft", select="per_task", inner_steps=3, constraint="hull",
    )  # fmt: skip
    assert set(seen) == set(vit["data"])
    assert set(plan.iterations[0].task_wins) == set(vit["data"])
    assert set(plan.final_task_losses) == set(vit["data"])
    for row in plan.coefficients.values():
        assert sum(row) == pytest.approx(1.0) and min(row) >= -1e-12


# --- same plan as the recipe path on the tiny LLaMA --------------------------------------
@pytest.mark.parametrize("variant", ["hard", "soft"])
def test_api_gives_the_recipe_plan_on_a_tiny_llama(zoo, variant):
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.data.calibration import load_calibration
    from mergekit_fw.mergekit.runner import prepare

    calib = f"{zoo['calib']}/two_tasks.yaml"
    experts = [zoo["reverse"], zoo["add"]]
    # init: base on both paths (auto compares TIES only where mergekit is: the recipe path)
    options = dict(iterations=3, variant=variant, inner_steps=4, init="base")
    cfg = MergeConfiguration.model_validate(
        {
            "merge_method": "frank_wolfe", "base_model": zoo["base"], "dtype": "float32",
            "models": [{"model": m} for m in experts],
            "parameters": {"calibration": calib, **options},
        }
    )  # fmt: skip
    recipe_plan = prepare(cfg, MergeOptions(quiet=True))

    tokenizer = AutoTokenizer.from_pretrained(zoo["base"])
    calibration = load_calibration(calib, tokenizer, max_length=512)
    batches = make_batches(calibration, 8, tokenizer.pad_token_id, "cpu")
    data = {task.name: [] for task in calibration.tasks}
    for b in batches:  # the same padded batches, as plain dicts a user would build
        data[calibration.tasks[b.task].name].append(
            {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}
        )
    model = AutoModelForCausalLM.from_pretrained(zoo["base"], dtype=torch.float32)
    _, api_plan = frank_wolfe_merge(model, experts, "causal_lm", data, **options)

    assert api_plan.tensors == recipe_plan.tensors
    assert [r.picks for r in api_plan.iterations] == [r.picks for r in recipe_plan.iterations]
    assert api_plan.final_loss == pytest.approx(recipe_plan.final_loss, rel=1e-5)
    for name, row in recipe_plan.coefficients.items():
        assert api_plan.coefficients[name] == pytest.approx(row, abs=1e-5), name


def test_api_init_auto_starts_from_the_best_builtin_start(vit):
    """The default init: auto compares the base and task arithmetic (no mergekit here) and
    starts from the lowest calibration loss of its table."""
    from mergekit_fw.fw.screened_start import PROBE
    from mergekit_fw.fw.start_grid import TA_GRID

    _, plan = frank_wolfe_merge(
        vit["base"], vit["experts"], head_loss(vit["heads"]), vit["data"], iterations=1,
        tolerance=1e9,
    )  # fmt: skip
    table = plan.init_table
    names = [e["start"] for e in table]
    n = len(vit["experts"])
    assert names[: 1 + len(TA_GRID) + n] == ["base"] + [
        f"task_arithmetic lambda={x}" for x in TA_GRID
    ] + [f"{label} alone lambda={PROBE}" for label in plan.labels[1 : n + 1]]
    assert len(names) - 1 - len(TA_GRID) - n in (0, len(TA_GRID), 2 * len(TA_GRID))
    chosen = [e for e in table if e["chosen"]]
    assert len(chosen) == 1 and chosen[0]["loss"] == min(e["loss"] for e in table)
    assert len({e["loss"] for e in table}) > 1
    assert plan.iterations[0].loss == pytest.approx(chosen[0]["loss"], rel=1e-6)


# --- bad inputs: clear errors before any iteration ---------------------------------------
@pytest.fixture
def no_loop(monkeypatch):
    import mergekit_fw.fw.driver

    def refuse(*args, **kwargs):
        raise AssertionError("the loop started")

    monkeypatch.setattr(mergekit_fw.fw.driver, "run_frank_wolfe", refuse)


def test_bad_inputs_fail_before_any_iteration(vit, tmp_path, no_loop):
    base, heads, data = vit["base"], vit["heads"], vit["data"]
    loss = head_loss(heads)

    def call(candidates=None, loss=loss, data=data, **kw):
        return frank_wolfe_merge(base, candidates or vit["experts"], loss, data, **kw)

    cases = []
    wrong = dict(vit["experts"][0], **{"blocks.0.fc1.weight": torch.zeros(3, 3)})
    cases.append((lambda: call([wrong], iterations=1), "has shape [3, 3]"))
    bad_file = tmp_path / "wrong.safetensors"
    save_file(wrong, str(bad_file))
    cases.append((lambda: call([str(bad_file)], iterations=1), "has shape [3, 3]"))
    missing = {k: v for k, v in vit["experts"][0].items() if k != "norm.weight"}
    cases.append((lambda: call([missing], iterations=1), "lacks norm.weight"))
    cases.append((lambda: call(data=[], iterations=1), "data= has no batches"))
    cases.append((lambda: call(data={"bright": []}, iterations=1), "task 'bright' has no"))
    cases.append((lambda: call(data=iter([]), iterations=1), "data= has no batches"))

    def vector(model, batch, task):
        return F.cross_entropy(heads[task](model(batch[0])), batch[1], reduction="none")

    cases.append((lambda: call(loss=vector, iterations=1), "must be a scalar"))

    def nan(model, batch, task):
        return loss(model, batch, task) * float("nan")

    cases.append((lambda: call(loss=nan, iterations=1), "loss is nan"))

    def detached(model, batch, task):
        return loss(model, batch, task).detach()

    cases.append((lambda: call(loss=detached, iterations=1), "does not depend on the merged"))
    cases.append((lambda: call(include=lambda n: False, iterations=1), "selects no"))
    cases.append((lambda: call(iteratons=2), "Did you mean 'iterations'"))
    cases.append((lambda: call(iterations=1, calibration="x.jsonl"), "does not take"))
    cases.append((lambda: call(loss="mse", iterations=1), "loss= must be a callable"))
    cases.append((lambda: call(iterations=1, init="ties"), "cannot start from init='ties'"))
    cases.append(
        (lambda: call([str(tmp_path / "none.safetensors")], iterations=1), "does not exist")
    )
    for run, message in cases:
        with pytest.raises(FWConfigError, match=re.escape(message)):
            run()


def test_package_import_is_light_and_the_api_needs_no_mergekit(vit, tmp_path):
    """`import mergekit_fw` loads neither torch nor the API; the API runs with mergekit
    unimportable (candidates from a file)."""
    light = subprocess.run(
        [sys.executable, "-c", "import sys, mergekit_fw\n"
         "assert 'torch' not in sys.modules and 'mergekit_fw.api' not in sys.modules\n"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert light.returncode == 0, light.stderr
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == 'mergekit' or name.startswith('mergekit.'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch, torch.nn.functional as F
from mergekit_fw import frank_wolfe_merge
from mergekit_fw.cli.toy_vit import TinyViT
torch.manual_seed(0)
base = TinyViT(dim=16, depth=1, heads=2, mlp=32)
head = torch.nn.Linear(16, 2)
x, y = torch.rand(16, 8, 8), torch.randint(2, (16,))
loss = lambda m, b: F.cross_entropy(head(m(b[0])), b[1])
merged, plan = frank_wolfe_merge(base, [{str(vit["files"][0])!r}], loss, [(x, y)], iterations=1)
assert not any(m == 'mergekit' or m.startswith('mergekit.') for m in sys.modules)
print('ok', plan.labels)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
        env={"MERGEKIT_FW_DISABLE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
