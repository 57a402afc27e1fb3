"""LoRA adapters as FW vertices (issue 4): factor scores, equivalence with mergekit's
densified `base+adapter` pool, rejections, and the authors' `lora_mode: factors`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mergekit_fw.cli import toy
from mergekit_fw.plan import FWPlan
from mergekit_fw.pool.lora_factors import factor_layout
from mergekit_fw.pool.lora_files import read_adapter
from mergekit_fw.pool.lora_math import add_delta_, factor_dot, factor_norm_sq
from mergekit_fw.settings import FWConfigError
from tests.helpers import (
    ADAPTERS,
    check,
    densified,
    make_adapter,
    run_in_process,
)
from tests.helpers import write_recipe as recipe

MERGEKIT_YAML = str(Path(sys.executable).with_name("mergekit-yaml"))


def mergekit_yaml(config: Path, out: Path, *extra: str):
    result = subprocess.run(
        [MERGEKIT_YAML, str(config), str(out), *extra],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_run(a: FWPlan, b: FWPlan, out_a: Path, out_b: Path) -> float:
    """Same picks, steps and coefficients; written tensors within 1e-5. Returns max |diff|.
    The default step (quadratic) is a smooth function of float32 losses, so the two runs'
    gammas, losses and coefficients agree to the losses' precision (about 1e-6 relative), not bit
    for bit."""
    assert a.labels == b.labels
    assert len(a.iterations) == len(b.iterations)
    for x, y in zip(a.iterations, b.iterations):
        assert x.picks == y.picks
        assert x.gamma == pytest.approx(y.gamma, rel=1e-5, abs=1e-9)
        assert x.loss == pytest.approx(y.loss, rel=1e-6, abs=1e-6)
    for name in a.tensors:
        assert a.coefficients[name] == pytest.approx(b.coefficients[name], rel=1e-6, abs=1e-6)
    ta, tb = load_file(out_a / "model.safetensors"), load_file(out_b / "model.safetensors")
    assert set(ta) == set(tb)
    diff = max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta)
    assert diff <= 1e-5
    return diff


# -- factor arithmetic ----------------------------------------------------------------------
def _random_adapter(folder: Path, gen: torch.Generator, case: int):
    """One random adapter module on disk; returns (adapter, tensor name, W0, scale, B A oriented)."""
    r, out_f, in_f = (int(torch.randint(1, n, (1,), generator=gen)) for n in (5, 10, 10))
    kind = ["linear", "fan_in_fan_out", "embedding"][case % 3]
    rslora, alpha = case % 2 == 0, float(torch.randint(1, 32, (1,), generator=gen))
    pattern = {"lin": 3.0} if case % 4 == 1 else {}
    a = torch.randn(r, in_f, generator=gen, dtype=torch.float64)
    b = torch.randn(out_f, r, generator=gen, dtype=torch.float64)
    if kind == "embedding":
        keys = [
            "base_model.model.m.emb.lora_embedding_A",
            "base_model.model.m.emb.lora_embedding_B",
        ]
        name = "m.emb.weight"
    else:
        keys = ["base_model.model.m.lin.lora_A.weight", "base_model.model.m.lin.lora_B.weight"]
        name = "m.lin.weight"
    folder.mkdir()
    save_file({keys[0]: a, keys[1]: b}, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rslora, "bias": "none",
        "fan_in_fan_out": kind == "fan_in_fan_out", "alpha_pattern": pattern,
    }  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    used_alpha = pattern.get("lin", alpha) if kind != "embedding" else alpha
    scale = used_alpha / (math.sqrt(r) if rslora else r)
    delta = b @ a
    delta = delta.T if kind != "linear" else delta
    w0 = torch.randn(delta.shape, generator=gen, dtype=torch.float64)
    return read_adapter(str(folder)), name, w0, scale, delta


@pytest.mark.parametrize("case", range(12))
def test_factor_dot_and_norm_equal_dense(tmp_path, case):
    gen = torch.Generator().manual_seed(100 + case)
    adapter, name, w0, scale, delta = _random_adapter(tmp_path / "a", gen, case)
    assert adapter.modules[name].scale == pytest.approx(scale)
    vertex = w0 + scale * delta
    g = torch.randn(vertex.shape, generator=gen, dtype=torch.float64)
    base_dot, base_sq = torch.sum(g * w0), torch.sum(w0 * w0)
    assert float(factor_dot(adapter, name, g, base_dot)) == pytest.approx(float(torch.sum(g * vertex)), rel=1e-10, abs=1e-10)  # fmt: skip
    assert float(factor_norm_sq(adapter, name, w0, base_sq)) == pytest.approx(float(torch.sum(vertex * vertex)), rel=1e-10)  # fmt: skip
    torch.testing.assert_close(add_delta_(adapter, w0.clone(), name), vertex, atol=1e-12, rtol=0)
    # an untargeted tensor of an adapter vertex is the base
    assert factor_dot(adapter, "other.weight", g, base_dot) is base_dot


def test_factor_layout_keeps_or_folds_ranks(loras):
    uniform = factor_layout([read_adapter(loras["reverse"]), read_adapter(loras["add"])])
    assert (uniform.rank, uniform.alpha, uniform.use_rslora, uniform.scale) == (4, 8, False, 2.0)
    mixed = factor_layout([read_adapter(loras[t]) for t in ADAPTERS])
    assert (mixed.rank, mixed.alpha, mixed.use_rslora, mixed.scale) == (8, 8, False, 1.0)
    assert any(m.endswith("o_proj") for m in mixed.modules)


# -- equivalence with mergekit's densified base+adapter pool --------------------------------
@pytest.mark.slow
def test_adapter_pool_equals_densified_pool_stock_mergekit(zoo, loras, tmp_path):
    """Adapters only, paper settings, both through stock mergekit-yaml."""
    calib = f"{zoo['calib']}/two_tasks.yaml"
    common = dict(calibration=calib, iterations=2, line_search_evals=4, batch_size=16)
    fw = recipe(
        tmp_path / "a.yaml", zoo["base"], [zoo["base"]], adapters=loras["manifest"], **common
    )
    dense = recipe(tmp_path / "d.yaml", zoo["base"], densified(zoo["base"], loras), **common)
    mergekit_yaml(fw, tmp_path / "out_a")  # no --lora-merge-cache: nothing is densified
    mergekit_yaml(dense, tmp_path / "out_d", "--lora-merge-cache", str(tmp_path / "cache"))
    a = FWPlan.load(tmp_path / "out_a" / "fw_plan.json")
    d = FWPlan.load(tmp_path / "out_d" / "fw_plan.json")
    assert a.models[1:] == [f"adapter:{loras[t]}" for t in ADAPTERS]
    assert any(label.startswith("lora_") for it in a.iterations for label in it.wins)
    diff = assert_same_run(a, d, tmp_path / "out_a", tmp_path / "out_d")
    print(f"max |adapter - densified| = {diff:.3g}")
    assert not (tmp_path / "out_a" / "fw_linear.yaml").exists()
    assert (tmp_path / "out_d" / "fw_linear.yaml").exists()
    with pytest.raises(FWConfigError, match="cannot express"):
        a.linear_recipe()


@pytest.mark.slow
def test_mixed_pool_authors_settings_equals_densified(zoo, loras, tmp_path):
    """A dense expert next to adapters; cosine LMO (factor norms), origin vertex, TA start."""
    common = dict(
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=3, lmo="cosine",
        zero_vertex=True, init="task_arithmetic", init_scale=0.2, step="schedule",
        constraint="hull",
        step_size=0.3, batch_size=16,
    )  # fmt: skip
    fw = recipe(
        tmp_path / "a.yaml", zoo["base"], [zoo["base"], zoo["reverse"]],
        adapters=loras["manifest"], **common,
    )  # fmt: skip
    dense = recipe(
        tmp_path / "d.yaml", zoo["base"], [zoo["reverse"], *densified(zoo["base"], loras)], **common
    )
    a = run_in_process(fw, tmp_path / "out_a")
    d = run_in_process(dense, tmp_path / "out_d", cache=tmp_path / "cache")
    assert a.labels == ["base", "expert_reverse", *[f"lora_{t}" for t in ADAPTERS]]
    assert_same_run(a, d, tmp_path / "out_a", tmp_path / "out_d")


# -- rejections -----------------------------------------------------------------------------
def test_adapter_of_another_base_is_rejected(zoo, tmp_path):
    other = toy.save(toy.make_model(seed=3, hidden=48), toy.build_tokenizer(), tmp_path / "other")
    adapter = make_adapter(other, tmp_path / "lora_other", seed=0)
    assert json.loads(Path(adapter, "adapter_config.json").read_text())["base_model_name_or_path"]
    with pytest.raises(FWConfigError, match="is not an adapter of the base") as error:
        check(zoo, tmp_path, [adapter])
    assert "base_model_name_or_path" in str(error.value) and str(other) in str(error.value)


def test_target_modules_absent_from_the_base_are_rejected(zoo, loras, tmp_path):
    bad = tmp_path / "lora_renamed"
    shutil.copytree(loras["reverse"], bad)
    tensors = load_file(bad / "adapter_model.safetensors")
    save_file({k.replace("q_proj", "qkv_proj"): v for k, v in tensors.items()}, str(bad / "adapter_model.safetensors"))  # fmt: skip
    config = json.loads((bad / "adapter_config.json").read_text())
    config["target_modules"] = ["qkv_proj", "v_proj"]
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FWConfigError, match="qkv_proj, which the base .* does not have"):
        check(zoo, tmp_path, [str(bad)])


def test_dora_and_other_peft_types_are_rejected(zoo, loras, tmp_path):
    dora = make_adapter(zoo["base"], tmp_path / "dora", seed=0, use_dora=True)
    with pytest.raises(FWConfigError, match="DoRA"):
        check(zoo, tmp_path, [dora])
    ia3 = tmp_path / "ia3"
    shutil.copytree(loras["reverse"], ia3)
    (ia3 / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(FWConfigError, match="IA3 adapter; only LoRA"):
        check(zoo, tmp_path, [str(ia3)])


def test_pool_rules(zoo, loras, tmp_path):
    with pytest.raises(FWConfigError, match="at least one candidate"):
        check(zoo, tmp_path, None)
    with pytest.raises(FWConfigError, match="no such file"):
        check(zoo, tmp_path, None, adapters=str(tmp_path / "missing.yaml"))
    ok = check(zoo, tmp_path, [loras["reverse"]])
    assert [a.label for a in ok.adapters] == ["lora_reverse"] and ok.candidates == ()
    with pytest.raises(FWConfigError, match="dense candidates"):
        check(zoo, tmp_path, [loras["reverse"]], models=[zoo["base"], zoo["add"]], lora_mode="factors", init="task_arithmetic", constraint="hull")  # fmt: skip
    with pytest.raises(FWConfigError, match="init: task_arithmetic"):
        check(zoo, tmp_path, [loras["reverse"]], lora_mode="factors", constraint="hull")


def test_cli_check_lists_adapters_and_rejects_cleanly(zoo, loras, tmp_path):
    from click.testing import CliRunner

    from mergekit_fw.cli.main import main

    good = recipe(
        tmp_path / "good.yaml", zoo["base"], [zoo["base"]], adapters=loras["manifest"],
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=1,
    )  # fmt: skip
    result = CliRunner().invoke(main, ["check", str(good), "--no-calibration"])
    assert result.exit_code == 0, result.output
    assert "adapters (3): lora_reverse" in result.output
    bad = recipe(
        tmp_path / "bad.yaml", zoo["base"], [zoo["base"]], adapters=str(tmp_path / "nope.yaml"),
        calibration=f"{zoo['calib']}/two_tasks.yaml", iterations=1,
    )  # fmt: skip
    result = CliRunner().invoke(main, ["check", str(bad), "--no-calibration"])
    assert result.exit_code == 1 and "Error: parameters.adapters" in result.output


# -- lora_mode: factors (the authors' G-hard) -----------------------------------------------
@pytest.mark.slow
def test_lora_mode_factors_writes_a_loadable_peft_adapter(zoo, loras, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.helpers import calibration_loss

    calib = f"{zoo['calib']}/two_tasks.yaml"
    config = recipe(
        tmp_path / "f.yaml", zoo["base"], [zoo["base"]], adapters=loras["manifest"],
        calibration=calib, iterations=3, lora_mode="factors", lmo="cosine", zero_vertex=True,
        init="task_arithmetic", init_scale=0.3, step="schedule", step_size=0.03, constraint="hull",
    )  # fmt: skip
    out = tmp_path / "out"
    mergekit_yaml(config, out)
    assert {"adapter_config.json", "adapter_model.safetensors", "fw_plan.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model.safetensors").exists() and not (out / "fw_linear.yaml").exists()
    plan = FWPlan.load(out / "fw_plan.json")
    assert [it.gamma for it in plan.iterations] == pytest.approx([0.03, 0.02, 0.015])
    assert all(".lora_" in name for name in plan.tensors)
    written = json.loads((out / "adapter_config.json").read_text())
    assert written["r"] == 8 and sorted(written["target_modules"]) == ["o_proj", "q_proj", "v_proj"]
    # loadable on the base, and it is the model whose loss the pre-pass reported
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(zoo["base"]), str(out))
    merged = tmp_path / "merged"
    toy.save(model.merge_and_unload(), toy.build_tokenizer(), merged)
    assert calibration_loss(str(merged), calib) == pytest.approx(plan.final_loss, abs=1e-4)
    assert plan.final_loss < plan.iterations[0].loss
    assert "lora_mode: factors" in (out / "README.md").read_text()
