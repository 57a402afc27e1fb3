"""Several GPUs through accelerate's device map (mergekit/placement.py), tested without GPUs:
the placement is planned on a meta-device skeleton, and the placed path of the runner runs
on CPU with a device map (every entry "cpu")."""

from __future__ import annotations

import logging

import pytest
import torch
from mergekit.options import MergeOptions

from mergekit_fw.mergekit import placement as placing
from mergekit_fw.mergekit import runner
from mergekit_fw.mergekit.placement import Placement, plan_placement
from tests.helpers import config

PER_WEIGHT_BYTE = 2.5  # weights + gradient + activations, per byte of weights


def skeleton(layers: int = 8):
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=256, intermediate_size=704, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=1000,
    )  # fmt: skip
    with init_empty_weights():
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model, sum(p.numel() for p in model.parameters()) * 2


def gpus(count: int, share: float, weights: int) -> dict[int, int]:
    """`count` GPUs, each with free memory for `share` of the run's in-memory need."""
    each = int(share * weights * PER_WEIGHT_BYTE / placing.FIT)
    return dict.fromkeys(range(count), each)


@pytest.fixture(autouse=True)
def quiet_accelerate(caplog):
    caplog.set_level(logging.ERROR)  # "Device 0 is not available": these GPUs are made up


def test_a_model_too_large_for_one_gpu_is_spread_by_whole_layers():
    model, weights = skeleton()
    placed = plan_placement(model, gpus(2, 0.75, weights), PER_WEIGHT_BYTE, torch.bfloat16)
    assert placed is not None
    assert set(placed.device_map.values()) == {0, 1}  # both GPUs, nothing on cpu or disk
    names = [n for n, _ in model.named_parameters()]
    by_layer: dict[str, set] = {}
    for name in names:
        layer = ".".join(name.split(".")[:3]) if ".layers." in name else name
        by_layer.setdefault(layer, set()).add(placed.device_of(name))
    assert all(len(devices) == 1 for devices in by_layer.values())  # no layer is split
    assert placed.device_of("model.embed_tokens.weight") == torch.device("cuda", 0)
    assert placed.first == torch.device("cuda", 0)  # the batches go to the embeddings
    assert placed.device_of(f"model.layers.{len(model.model.layers) - 1}.mlp.up_proj.weight") == (
        torch.device("cuda", 1)
    )
    # each GPU holds at most its budget of weights
    held = {0: 0, 1: 0}
    for name, param in model.named_parameters():
        held[placed.device_of(name).index] += param.numel() * 2
    budget = gpus(2, 0.75, weights)[0] * placing.FIT / PER_WEIGHT_BYTE
    assert max(held.values()) <= budget


@pytest.mark.parametrize("count, share", [(2, 0.3), (1, 5.0)])
def test_no_placement_where_the_gpus_together_are_too_small_or_there_is_one(count, share):
    model, weights = skeleton()
    assert (
        plan_placement(model, gpus(count, share, weights), PER_WEIGHT_BYTE, torch.bfloat16) is None
    )


def test_device_of_takes_the_longest_module_prefix():
    placed = Placement({"model.layers.1": 0, "model.layers.10": 1, "": "cpu"})
    assert placed.device_of("model.layers.10.mlp.weight") == torch.device("cuda", 1)
    assert placed.device_of("model.layers.1.mlp.weight") == torch.device("cuda", 0)
    assert placed.device_of("lm_head.weight") == torch.device("cpu")
    assert placed.describe() == "1 modules on cuda:0, 1 modules on cuda:1, 1 modules on cpu"


@pytest.fixture
def two_tasks(zoo):
    models = [zoo["reverse"], zoo["add"]]
    return zoo, models, f"{zoo['calib']}/two_tasks.yaml"


def test_auto_goes_over_several_gpus_before_out_of_core(two_tasks, monkeypatch):
    """One GPU too small, two together large enough: in memory, placed; two too small: out
    of core, and the log says both."""
    from mergekit_fw.mergekit import estimate
    from mergekit_fw.mergekit.checks import check_recipe

    zoo, models, calib = two_tasks
    cfg = config(zoo["base"], models, calibration=calib, iterations=1, init="base")
    recipe = check_recipe(cfg, MergeOptions(quiet=True))
    pool = runner.vertex_pool(recipe, cfg, MergeOptions(quiet=True))
    need = estimate.estimate_recipe(recipe, pool, torch.float32)
    monkeypatch.setattr(estimate, "device_free_bytes", lambda device: need.in_memory_peak // 2)
    cuda = torch.device("cuda", 0)
    args = (recipe.settings, pool, cuda, torch.float32, recipe, zoo["base"], MergeOptions())

    share = need.in_memory_peak / placing.FIT  # each GPU could hold the whole run
    monkeypatch.setattr(runner, "gpu_budgets", lambda: dict.fromkeys(range(2), int(share)))
    choice = runner.choose_prepass(*args)
    assert not choice.out_of_core and choice.placement is not None
    assert "in memory over 2 GPUs" in choice.why

    monkeypatch.setattr(runner, "gpu_budgets", lambda: dict.fromkeys(range(2), 1 << 20))
    choice = runner.choose_prepass(*args)
    assert choice.out_of_core and choice.placement is None
    assert "more than the 2 GPUs hold together" in choice.why


def test_a_placed_model_gives_the_plan_of_one_device(two_tasks, monkeypatch):
    """The placed path (transformers loads with the device map, the pool streams each tensor
    to its parameter's device, the batches go to the embeddings' device) equals the plain
    in-memory run; on CPU every entry of the map is "cpu"."""
    zoo, models, calib = two_tasks
    cfg = config(zoo["base"], models, calibration=calib, iterations=2, init="auto")
    plain = runner.prepare(cfg, MergeOptions(quiet=True))
    seen = []

    def placed(settings, pool, device, dtype, recipe, base_path=None, options=None):
        seen.append(pool)
        layers = {f"model.layers.{i}": "cpu" for i in range(2)}
        device_map = {"model.embed_tokens": "cpu", **layers, "model.norm": "cpu", "lm_head": "cpu"}
        return runner.Prepass(False, "test: placed", Placement(device_map))

    monkeypatch.setattr(runner, "choose_prepass", placed)
    spread = runner.prepare(cfg, MergeOptions(quiet=True))
    assert seen and seen[0].placement  # the pool was told where each tensor lives
    assert set(seen[0].placement.values()) == {torch.device("cpu")}
    assert [r.gamma for r in spread.iterations] == pytest.approx(
        [r.gamma for r in plain.iterations]
    )
    assert spread.coefficients == plain.coefficients
    assert spread.init_table == plain.init_table
