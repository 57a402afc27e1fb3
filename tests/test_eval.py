"""`mergekit-fw eval`: lm-eval on the merge and the models it came from (issue 5, parts 1-2)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from click.testing import CliRunner  # noqa: E402

from mergekit_fw.cli import evaluate  # noqa: E402
from mergekit_fw.cli.main import main  # noqa: E402
from mergekit_fw.report.card import EVAL_FILE, plan_fingerprint  # noqa: E402
from tests.helpers import fw_merge  # noqa: E402

TASKS_DIR = Path(__file__).resolve().parents[1] / "examples" / "lm_eval_tasks"
EVAL_SECONDS = 180  # lm-eval start-up plus 4 tiny models x 2 tasks x 8 docs, on a busy CPU

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def merged(zoo, tmp_path_factory) -> Path:
    return fw_merge(zoo, tmp_path_factory.mktemp("eval") / "out", ["reverse", "add"])


@pytest.fixture(scope="module")
def evaluated(merged, tmp_path_factory):
    """One CLI run, started from an unrelated folder: the task data must still be found."""
    elsewhere = tmp_path_factory.mktemp("cwd")
    args = ["eval", str(merged), "--tasks", "toy_reverse,toy_add_gen",
            "--include-path", str(TASKS_DIR), "--limit", "8", "--device", "cpu"]  # fmt: skip
    before = os.getcwd()
    os.chdir(elsewhere)
    try:
        start = time.perf_counter()
        result = CliRunner().invoke(main, args)
        seconds = time.perf_counter() - start
    finally:
        os.chdir(before)
    return result, seconds


def test_eval_prints_one_table_of_tasks_by_models(evaluated, merged):
    result, seconds = evaluated
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert seconds < EVAL_SECONDS
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| task (headline metric) | merged | base | expert_reverse | expert_add |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert set(rows) == {"toy_reverse (bits_per_byte ↓)", "toy_add_gen (exact_match ↑)"}
    for line in rows.values():
        cells = [c.strip("* ") for c in line.strip("|").split("|")[1:]]
        assert len(cells) == 4 and all(c and c != "-" for c in cells), line


def test_eval_writes_json_with_every_model_and_task(evaluated, merged):
    document = json.loads((merged / EVAL_FILE).read_text())
    assert [m["label"] for m in document["models"]] == [
        "merged",
        "base",
        "expert_reverse",
        "expert_add",
    ]
    assert document["settings"]["limit"] == 8
    from mergekit_fw.plan import FWPlan

    assert document["plan_fingerprint"] == plan_fingerprint(FWPlan.load(merged / "fw_plan.json"))
    scores = document["scores"]
    assert set(scores) == {"toy_reverse", "toy_add_gen"}
    for task, row in scores.items():
        assert set(row["scores"]) == {"merged", "base", "expert_reverse", "expert_add"}, task
        assert all(isinstance(v, float) for v in row["scores"].values()), task
    assert scores["toy_reverse"]["headline"]["higher_is_better"] is False
    # the task discriminates: the reverse expert is likelier to produce reversed strings
    bits = scores["toy_reverse"]["scores"]
    assert bits["expert_reverse"] < bits["base"]


def test_eval_rejects_a_folder_that_is_not_a_model(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path), "--tasks", "toy_reverse"])
    assert result.exit_code != 0
    assert "not a merged model folder" in result.output


def test_eval_without_lm_eval_says_how_to_get_it(merged, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    result = CliRunner().invoke(main, ["eval", str(merged), "--tasks", "toy_reverse"])
    assert result.exit_code != 0
    assert "pip install 'mergekit-fw[eval]'" in result.output


def test_unknown_task_lists_the_available_ones():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    with pytest.raises(evaluate.EvalError) as error:
        evaluate.check_tasks(manager, ["toy_revers"], [str(TASKS_DIR)])
    message = str(error.value)
    assert "did you mean toy_reverse" in message
    assert "toy_add_gen" in message and "toy_sort" in message
    assert evaluate.check_tasks(manager, ["toy_reverse", "toy"], [str(TASKS_DIR)])


def test_local_tasks_skip_indexing_the_builtin_ones():
    manager = evaluate.task_manager([str(TASKS_DIR)], ["toy_reverse", "toy_gen"])
    assert set(manager.all_tasks) <= {p.stem for p in TASKS_DIR.glob("*.yaml")} | {"toy", "toy_gen"}


def test_models_to_compare(merged, tmp_path):
    models, plan = evaluate.models_to_compare(merged)
    assert [m.label for m in models] == ["merged", "base", "expert_reverse", "expert_add"]
    assert models[1].pretrained == plan.models[0]
    models, _ = evaluate.models_to_compare(merged, auto_compare=False)
    assert [m.label for m in models] == ["merged"]
    models, _ = evaluate.models_to_compare(merged, compare=[plan.models[1], "org/some-model@v2"])
    assert [(m.label, m.revision) for m in models] == [
        ("merged", None), ("expert_reverse", None), ("some-model", "v2"),
    ]  # fmt: skip
    with pytest.raises(evaluate.EvalError, match="does not exist"):
        evaluate.models_to_compare(merged, compare=[str(tmp_path / "nope")])


@pytest.mark.parametrize(
    ("result", "prefer", "expected"),
    [
        ({"acc,none": 0.5, "acc_norm,none": 0.6, "acc_stderr,none": 0.1}, None, "acc,none"),
        ({"acc,none": 0.5, "acc_norm,none": 0.6}, "acc_norm", "acc_norm,none"),
        ({"word_perplexity,none": 20.0, "bits_per_byte,none": 0.7}, None, "bits_per_byte,none"),
        (
            {"exact_match,strict-match": 0.3, "exact_match,flexible-extract": 0.4},
            None,
            "exact_match,strict-match",
        ),  # fmt: skip
        ({"alias": "x", "custom,none": 1.5}, "acc", "custom,none"),
    ],
)
def test_choose_headline(result, prefer, expected):
    headline = evaluate.choose_headline(result, {"bits_per_byte": False}, prefer)
    assert headline.key == expected


def test_markdown_table_marks_the_best_score_per_direction():
    rows = {
        "up": {"headline": {"metric": "acc", "key": "acc,none", "higher_is_better": True},
               "scores": {"a": 0.5, "b": 0.7}, "stderr": {"a": None, "b": 0.01}},
        "down": {"headline": {"metric": "bits_per_byte", "key": "bits_per_byte,none",
                              "higher_is_better": False},
                 "scores": {"a": 1.2, "b": None}, "stderr": {}},
    }  # fmt: skip
    table = evaluate.markdown_table(rows, ["a", "b"])
    assert "| up (acc ↑) | 0.5000 | **0.7000 ± 0.010** |" in table
    assert "| down (bits_per_byte ↓) | 1.2000 | - |" in table  # nothing to compare with


def test_a_scored_group_is_one_row_and_an_unscored_one_shows_its_tasks():
    score = {"acc,none": 0.5}
    run = {
        "results": {"a1": score, "a2": score, "grp": score, "b1": score, "plain": {"alias": "p"}},
        "group_subtasks": {"grp": ["a1", "sub"], "sub": ["a2"], "plain": ["b1"]},
        "higher_is_better": {},
    }
    assert evaluate.table_tasks({"m": run}, ["grp", "plain"]) == ["grp", "plain", "b1"]
    rows = evaluate.scores_table({"m": run}, requested=["grp", "plain"])
    assert list(rows) == ["grp", "b1"]  # "plain" has no score of its own


def test_a_lora_adapter_output_is_evaluated_on_its_base(zoo, tmp_path):
    """`lora_mode: factors` writes a PEFT adapter, not a model: eval loads it onto the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(zoo["base"])
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(str(tmp_path / "adapter"))
    models, _ = evaluate.models_to_compare(tmp_path / "adapter", compare=[zoo["base"]])
    assert (models[0].pretrained, models[0].peft) == (zoo["base"], str(tmp_path / "adapter"))
    args = ["eval", str(tmp_path / "adapter"), "--tasks", "toy_reverse", "--compare", zoo["base"],
            "--include-path", str(TASKS_DIR), "--limit", "4", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "+ LoRA" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("| toy_reverse"))
    merged, base = (cell.strip("* ") for cell in row.strip("|").split("|")[1:])
    assert merged != base  # the adapter was applied


def test_lora_candidates_of_a_plan_are_the_base_plus_adapter(merged, tmp_path):
    from mergekit_fw.plan import FWPlan

    plan = FWPlan.load(merged / "fw_plan.json")
    if "adapters" not in FWPlan.model_fields:
        pytest.skip("plans without adapter vertices")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (tmp_path / "lora").mkdir()
    entry = f"adapter:{tmp_path / 'lora'}"
    plan.models[2] = entry
    plan = plan.model_copy(update={"adapters": {entry: str(tmp_path / "lora")}})
    plan.save(out / "fw_plan.json")
    models, _ = evaluate.models_to_compare(out)
    assert (models[3].pretrained, models[3].peft) == (plan.models[0], str(tmp_path / "lora"))
