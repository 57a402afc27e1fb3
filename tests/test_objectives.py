"""Objectives: hand-checked values and gradients; a BERT classifier through mergekit-yaml."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from mergekit_fw.cli import toy
from mergekit_fw.fw.objectives import (
    IGNORE_INDEX,
    Batch,
    CausalLMObjective,
    ClassificationObjective,
    EntropyObjective,
    make_objective,
)
from mergekit_fw.plan import FWPlan
from mergekit_fw.settings import FWConfigError


def fixed(logits: torch.Tensor):
    return lambda **_inputs: SimpleNamespace(logits=logits)


def batch(labels) -> Batch:
    labels = torch.tensor(labels)
    ids = torch.zeros_like(labels)
    return Batch(0, ids, torch.ones_like(ids), labels, 1.0, 1)


def test_classification_value_and_gradient():
    z = torch.zeros(1, 2, requires_grad=True)
    loss = ClassificationObjective().batch_loss_sum(fixed(z), batch([[0]]))
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    assert z.grad[0].tolist() == pytest.approx([-0.5, 0.5])  # softmax - onehot


def test_causal_lm_value_and_gradient_skip_masked_positions():
    # positions 0..2 predict tokens 1..3; the label at position 1 is masked (a prompt token)
    z = torch.zeros(1, 3, 4, requires_grad=True)
    loss = CausalLMObjective().batch_loss_sum(fixed(z), batch([[5, IGNORE_INDEX, 2]]))
    assert loss.item() == pytest.approx(math.log(4))  # one target (token 2), uniform over 4
    loss.backward()
    expected = torch.zeros(1, 3, 4)
    expected[0, 1] = torch.tensor([0.25, 0.25, -0.75, 0.25])
    torch.testing.assert_close(z.grad, expected)


def test_entropy_value_and_gradient():
    z = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # p = (1/4, 3/4)
    loss = EntropyObjective(sequence_level=True).batch_loss_sum(fixed(z), batch([[IGNORE_INDEX]]))
    p = torch.tensor([0.25, 0.75])
    h = float(-(p * p.log()).sum())
    assert loss.item() == pytest.approx(h)
    loss.backward()
    assert z.grad[0].tolist() == pytest.approx((-p * (p.log() + h)).tolist(), abs=1e-6)


def test_lm_entropy_ignores_labels_but_follows_the_mask():
    z = torch.zeros(1, 3, 4)
    value = EntropyObjective(sequence_level=False).batch_loss_sum(
        fixed(z), batch([[5, IGNORE_INDEX, 2]])
    )
    assert float(value) == pytest.approx(math.log(4))


def test_objective_must_fit_the_architecture():
    with pytest.raises(FWConfigError, match="objective: classification"):
        make_objective("causal_lm", ["BertForSequenceClassification"])
    with pytest.raises(FWConfigError, match="needs a \\*ForSequenceClassification base"):
        make_objective("classification", ["LlamaForCausalLM"])
    assert make_objective("entropy", ["BertForSequenceClassification"]).sequence_level


# -- a tiny BERT classifier zoo, merged by the stock mergekit-yaml ------------------------
def _bert(seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(toy.SPECIALS) + len(toy.ALPHABET), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64, num_labels=2,
        pad_token_id=0,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def _records(rule, n: int, seed: int) -> list[dict]:
    import random

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 8))) for _ in range(n)]
    return [{"text": w, "label": int(rule(w))} for w in words]


RULES = {"has_a": lambda w: "a" in w, "long": lambda w: len(w) > 5}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    tok = toy.build_tokenizer()
    base = _bert(0)
    paths = {"base": toy.save(base, tok, root / "base")}
    for i, (name, rule) in enumerate(RULES.items()):
        model = _bert(0)
        model.load_state_dict(base.state_dict())
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        data = _records(rule, 256, seed=i)
        model.train()
        for step in range(60):
            chunk = data[(step * 16) % 256 : (step * 16) % 256 + 16]
            enc = tok([r["text"] for r in chunk], return_tensors="pt", padding=True)
            loss = model(**enc, labels=torch.tensor([r["label"] for r in chunk])).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        paths[name] = toy.save(model.eval(), tok, root / name)
        toy.write_jsonl(root / f"{name}.jsonl", _records(rule, 32, seed=100 + i))
    (root / "tasks.yaml").write_text("tasks:\n" + "".join(f"  {n}: {n}.jsonl\n" for n in RULES))
    paths["root"] = str(root)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["hard", "soft"])
def test_classifier_merge_through_stock_mergekit_yaml(classifiers, tmp_path, variant):
    from transformers import AutoModelForSequenceClassification

    root = Path(classifiers["root"])
    recipe = tmp_path / "fw.yaml"
    params = {
        "calibration": str(root / "tasks.yaml"),
        "iterations": 2,
        "objective": "classification",
    }
    if variant == "soft":
        params.update(variant="soft", select="per_task", inner_steps=10, constraint="hull")
    recipe.write_text(yaml.safe_dump({
        "merge_method": "frank_wolfe", "base_model": classifiers["base"], "dtype": "float32",
        "models": [{"model": classifiers[n]} for n in RULES], "parameters": params,
    }))  # fmt: skip
    out = tmp_path / "out"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mergekit-yaml")), str(recipe), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    plan = FWPlan.load(out / "fw_plan.json")
    assert set(plan.task_preferences) == set(RULES)
    card = (out / "README.md").read_text()
    assert "Which vertex each calibration task's gradient prefers" in card
    assert all(f"| {task} |" in card for task in RULES)
    assert plan.final_loss < plan.iterations[0].loss
    # the written classifier reproduces the pre-pass loss
    from mergekit_fw.data.batches import make_batches
    from mergekit_fw.data.calibration import load_calibration
    from mergekit_fw.fw.objectives import evaluate

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = toy.build_tokenizer()
    calib = load_calibration(str(root / "tasks.yaml"), tok, 64, num_labels=2, sequence=True)
    report = evaluate(
        model,
        ClassificationObjective(),
        make_batches(calib, 8, 0, "cpu"),
        list(RULES),
        grad=False,
        quiet=True,
    )
    assert report.total == pytest.approx(plan.final_loss, abs=1e-4)
    if variant == "soft":
        for record in plan.iterations:
            assert set(record.task_wins) == set(RULES)
