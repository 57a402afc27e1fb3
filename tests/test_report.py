"""Plots and model card of a finished FW merge (issue 5, part 3)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from click.testing import CliRunner  # noqa: E402

from mergekit_fw.cli.main import main  # noqa: E402
from mergekit_fw.plan import PLAN_FILE, FWPlan, IterationRecord  # noqa: E402
from mergekit_fw.report.card import (  # noqa: E402
    EVAL_FILE,
    SECTION_TITLE,
    card_section,
    plan_fingerprint,
    report_after_merge,
    write_report,
)
from mergekit_fw.report.plots import (  # noqa: E402
    COEFFICIENTS_PNG,
    DPI,
    LINE_FIGSIZE,
    LOSS_PNG,
    PLOT_FILES,
    WINS_PNG,
    heatmap_figsize,
    layer_group,
    make_plots,
)
from tests.helpers import fw_merge  # noqa: E402


@pytest.fixture(scope="module")
def merged(zoo, tmp_path_factory) -> Path:
    return fw_merge(zoo, tmp_path_factory.mktemp("report") / "out", ["reverse", "add"])


def png_pixels(path: Path):
    from matplotlib.image import imread

    return imread(str(path))


def expected_px(figsize: tuple[float, float]) -> tuple[int, int]:
    """(height, width) in pixels of a figure saved at DPI."""
    return round(figsize[1] * DPI), round(figsize[0] * DPI)


def test_merge_writes_plots_of_the_expected_size(merged):
    plan = FWPlan.load(merged / PLAN_FILE)
    sizes = {
        LOSS_PNG: expected_px(LINE_FIGSIZE),
        WINS_PNG: expected_px(LINE_FIGSIZE),
        COEFFICIENTS_PNG: expected_px(heatmap_figsize(len(plan.coefficients), len(plan.models))),
    }
    for name, (height, width) in sizes.items():
        pixels = png_pixels(merged / name)
        assert pixels.shape[:2] == (height, width), name
        assert pixels[..., :3].var() > 0, f"{name} is blank"


def test_card_mentions_fw_the_plan_and_the_plots(merged):
    card = (merged / "README.md").read_text()
    assert card.count(SECTION_TITLE) == 1
    assert "Frank-Wolfe" in card and PLAN_FILE in card and "fw_linear.yaml" in card
    for name in PLOT_FILES:
        assert f"]({name})" in card, name
    plan = FWPlan.load(merged / PLAN_FILE)
    assert f"| iterations run / budget | {len(plan.iterations)} / 2" in card
    assert f"{plan.final_loss:.4f}" in card
    assert f"| final FW gap | {plan.iterations[-1].gap:.4g} |" in card
    assert "top candidates by total coefficient" in card
    assert "expert_reverse" in card and "expert_add" in card
    # mergekit's own card is still there, above ours
    assert card.index("mergekit") < card.index(SECTION_TITLE)


def test_report_command_regenerates_and_is_idempotent(merged):
    for name in PLOT_FILES:
        (merged / name).unlink()
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(main, ["report", str(merged)])
        assert result.exit_code == 0, result.output
    for name in PLOT_FILES:
        assert (merged / name).exists()
        assert str(merged / name) in result.output
    assert (merged / "README.md").read_text().count(SECTION_TITLE) == 1


def test_report_command_rejects_a_folder_without_a_plan(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code != 0
    assert "no fw_plan.json" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "not a folder" in result.output


def test_card_shows_evaluation_of_this_plan_only(merged):
    plan = FWPlan.load(merged / PLAN_FILE)
    table = "| task (headline metric) | merged | base |\n|---|---|---|\n| t (acc ↑) | 0.5 | 0.4 |\n"
    evaluation = {"plan_fingerprint": plan_fingerprint(plan), "table": table}
    try:
        (merged / EVAL_FILE).write_text(json.dumps(evaluation))
        write_report(merged)
        assert "### Evaluation" in (merged / "README.md").read_text()
        evaluation["plan_fingerprint"] = "an older merge"
        (merged / EVAL_FILE).write_text(json.dumps(evaluation))
        write_report(merged)
        assert "### Evaluation" not in (merged / "README.md").read_text()
    finally:
        (merged / EVAL_FILE).unlink(missing_ok=True)


def test_missing_matplotlib_only_warns(merged, monkeypatch, caplog):
    plan = FWPlan.load(merged / PLAN_FILE)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with caplog.at_level(logging.WARNING, logger="mergekit_fw"):
        report_after_merge(merged, plan)
    assert "matplotlib" in caplog.text
    assert not any((merged / name).exists() for name in PLOT_FILES)  # no stale pictures
    card = (merged / "README.md").read_text()
    assert SECTION_TITLE in card and ".png" not in card
    monkeypatch.undo()
    write_report(merged, plan)  # leave the module fixture as it was


def synthetic_plan(layers: int, candidates: int) -> FWPlan:
    """A 7B-shaped plan without any model: LLaMA tensor names, a zero vertex, negative base."""
    kinds = ["self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj", "input_layernorm"]
    tensors = ["model.embed_tokens.weight"]
    tensors += [f"model.layers.{i}.{k}.weight" for i in range(layers) for k in kinds]
    tensors += ["model.norm.weight", "lm_head.weight"]
    labels = ["base", *[f"cand{k}" for k in range(candidates)]]
    coefficients = {}
    for j, name in enumerate(tensors):
        row = [((j * 7 + k * 3) % 5) / 10 for k in range(len(labels))]
        row[0] = 1.0 - sum(row[1:])
        coefficients[name] = row
    iterations = [
        IterationRecord(
            t=t,
            loss=2.0 / (t + 1),
            task_losses={"a": 2.0 / (t + 1), "b": 1.5 / (t + 1)},
            gap=1.0 / (t + 1) ** 2,
            gamma=0.5,
            wins={labels[1 + t % candidates]: len(tensors) - 3, "zero": 3},
            picks={},
        )  # fmt: skip
        for t in range(3)
    ]
    return FWPlan(
        settings={"iterations": 3, "zero_vertex": True},
        base_model="base", models=labels, labels=labels, tensors=tensors,
        coefficients=coefficients, iterations=iterations, final_loss=0.6,
        final_task_losses={"a": 0.6, "b": 0.5}, stopped="budget",
    )  # fmt: skip


def test_plots_of_a_large_plan_with_negative_coefficients(tmp_path):
    plan = synthetic_plan(layers=32, candidates=4)
    paths = make_plots(plan, tmp_path)
    assert [p.name for p in paths] == [LOSS_PNG, COEFFICIENTS_PNG, WINS_PNG]
    height, width = expected_px(heatmap_figsize(len(plan.coefficients), len(plan.models)))
    pixels = png_pixels(tmp_path / COEFFICIENTS_PNG)
    assert pixels.shape[:2] == (height, width)
    assert height <= 24 * DPI  # capped for big models
    for path in paths:
        assert png_pixels(path)[..., :3].var() > 0
    section = card_section(plan, [p.name for p in paths])
    assert "cand" in section and "![" in section


def test_layer_grouping_orders_embeddings_layers_head():
    names = ["lm_head.weight", "model.layers.10.mlp.up_proj.weight", "model.embed_tokens.weight",
             "model.layers.2.mlp.up_proj.weight", "model.norm.weight"]  # fmt: skip
    ordered = sorted(names, key=lambda n: layer_group(n)[0])
    assert ordered[0] == "model.embed_tokens.weight"
    assert ordered[1:3] == [
        "model.layers.2.mlp.up_proj.weight",
        "model.layers.10.mlp.up_proj.weight",
    ]
    assert layer_group("model.layers.10.mlp.up_proj.weight")[1] == "layer 10"


def test_heatmap_rows_name_the_tensor_inside_each_layer_group():
    from mergekit_fw.report.plots import coefficients_figure, heatmap_rows, tensor_label

    assert tensor_label("model.layers.3.self_attn.q_proj.weight") == "q_proj"
    assert tensor_label("model.layers.3.mlp.up_proj.weight") == "mlp.up_proj"
    assert tensor_label("model.layers.3.self_attn.q_proj.bias") == "q_proj.bias"
    assert tensor_label("model.embed_tokens.weight") == "embed_tokens"
    assert tensor_label("lm_head.weight") == "lm_head"
    labels, firsts = heatmap_rows(
        ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
         "model.layers.1.self_attn.q_proj.weight"]
    )  # fmt: skip
    assert labels == ["layer 0  q_proj", "mlp.up_proj", "layer 1  q_proj"]
    assert firsts == [True, False, True]
    small = synthetic_plan(layers=2, candidates=2)
    ticks = [t.get_text() for t in coefficients_figure(small).axes[0].get_yticklabels()]
    assert len(ticks) == len(small.coefficients)  # one label per row
    assert "layer 1  q_proj" in ticks and "mlp.down_proj" in ticks and "lm_head" in ticks
    big = synthetic_plan(layers=80, candidates=2)  # 323 rows in 24 inches: groups only
    ticks = [t.get_text() for t in coefficients_figure(big).axes[0].get_yticklabels()]
    assert "layer 79" in ticks and "mlp.down_proj" not in ticks


def test_a_plan_is_a_typed_frozen_value_and_old_plans_load(tmp_path):
    """plan.settings is typed (PlanSettings); a plan written before constraint, reduction
    and init: auto existed loads with what their absence meant then (hull, per token, base)."""
    import pydantic

    plan = synthetic_plan(layers=2, candidates=2)
    assert (plan.settings.constraint, plan.settings.reduction, plan.settings.init) == (
        "hull", "token", "base",
    )  # fmt: skip
    assert plan.loss_unit == "nats/token" and plan.linear_recipe_refusal() is None
    with pytest.raises(pydantic.ValidationError):
        plan.final_loss = 0.0
    with pytest.raises(pydantic.ValidationError):
        plan.settings.merge_fn = "ties"
    ties = plan.model_copy(
        update={"settings": plan.settings.model_copy(update={"merge_fn": "ties"})}
    )
    ties.save(tmp_path / "fw_plan.json")
    again = FWPlan.load(tmp_path / "fw_plan.json")
    assert again.settings == ties.settings
    assert "merge_fn: ties" in again.linear_recipe_refusal()
