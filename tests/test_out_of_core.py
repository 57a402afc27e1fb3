"""The out-of-core pre-pass (fw/offload.py, fw/out_of_core.py): block-wise gradients equal
autograd's, and a recipe run gives the in-memory run's plan and weights."""

from __future__ import annotations

import pytest
import torch
from mergekit.options import MergeOptions

from mergekit_fw.fw.offload import Offloaded, TensorStore, find_blocks
from mergekit_fw.mergekit.runner import prepare
from tests.helpers import config


def _skeleton_of(model_class, config_):
    from accelerate import init_empty_weights

    with init_empty_weights():
        skeleton = model_class(config_).double()
    skeleton.tie_weights()
    return skeleton


def _blockwise_grads(reference, skeleton, run):
    state = {n: p.detach().clone() for n, p in reference.named_parameters()}
    names = {id(p): n for n, p in skeleton.named_parameters()}
    grads: dict[str, torch.Tensor] = {}

    def sink(name, g):
        grads[name] = grads[name] + g if name in grads else g

    engine = Offloaded(skeleton, names, torch.device("cpu"))
    with engine.use(lambda n: state[n].clone(), sink):
        loss = run(skeleton)
        loss.backward()
    return loss, grads, engine


@pytest.mark.parametrize("tied", [False, True])
def test_llama_blockwise_gradient_equals_autograd(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied, pad_token_id=0,
    )  # fmt: skip
    reference = LlamaForCausalLM(cfg).double()
    ids = torch.randint(1, 40, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding: the model's own mask code runs

    def run(model):
        return model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss

    expected = run(reference)
    expected.backward()
    loss, grads, engine = _blockwise_grads(reference, _skeleton_of(LlamaForCausalLM, cfg), run)
    assert len(engine.blocks) == 3 + 3  # embeddings, 3 layers, final norm, head
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    params = dict(reference.named_parameters())
    assert set(grads) == set(params)
    for name, param in params.items():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-10, atol=1e-12)


def test_bert_classifier_blockwise_gradient_equals_autograd():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    reference = BertForSequenceClassification(cfg).double().eval()
    ids = torch.randint(1, 50, (4, 7))
    labels = torch.tensor([0, 1, 2, 1])

    def run(model):
        return model(input_ids=ids, labels=labels).loss

    expected = run(reference)
    expected.backward()
    skeleton = _skeleton_of(BertForSequenceClassification, cfg).eval()
    loss, grads, _ = _blockwise_grads(reference, skeleton, run)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-10, atol=1e-12)


def test_blocks_cover_every_parameter_once():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    skeleton = _skeleton_of(LlamaForCausalLM, cfg)
    names = {id(p): n for n, p in skeleton.named_parameters()}
    blocks = find_blocks(skeleton, names)
    covered = [name for b in blocks for _, _, name in b.params]
    assert sorted(set(covered)) == sorted(names.values())


def test_tensor_store_round_trip_and_accumulate(tmp_path):
    store = TensorStore(tmp_path / "s", torch.device("cpu"))
    x = torch.randn(3, 5).to(torch.bfloat16)
    store.put("a.weight", x)
    assert torch.equal(store.get("a.weight"), x)
    store.add_("a.weight", x)
    assert torch.equal(store.get("a.weight"), x + x)
    store.remove()
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "options",
    [
        {"init": "base", "constraint": "box"},
        {"init": "base", "constraint": "hull", "lmo": "cosine", "granularity": "model"},
        {"init": "auto", "step": "quadratic"},
    ],
)
def test_out_of_core_plan_equals_in_memory(zoo, noisy, options):
    models = [zoo["reverse"], zoo["add"], noisy]
    calib = f"{zoo['calib']}/two_tasks.yaml"
    plans = {}
    for prepass in ("in_memory", "out_of_core"):
        cfg = config(zoo["base"], models, calibration=calib, iterations=3, prepass=prepass,
                     **options)  # fmt: skip
        plans[prepass] = prepare(cfg, MergeOptions(quiet=True))
    memory, disk = plans["in_memory"], plans["out_of_core"]
    assert [r.gamma for r in memory.iterations] == pytest.approx(
        [r.gamma for r in disk.iterations], abs=1e-6
    )
    for name, row in memory.coefficients.items():
        assert disk.coefficients[name] == pytest.approx(row, abs=1e-5)
    assert disk.final_loss == pytest.approx(memory.final_loss, rel=1e-5)
    if options["init"] == "auto":  # the start table was built out of core too (no TIES rows)
        assert [e["start"] for e in disk.init_table] == [
            e["start"] for e in memory.init_table if not e["start"].startswith("ties")
        ]


@pytest.mark.parametrize(
    "option, named",
    [({"variant": "soft"}, "variant: soft"), ({"init": "ties"}, r"init: ties \(a mergekit merge")],
)
def test_out_of_core_refuses_what_it_cannot_run(zoo, option, named):
    """Refused by the options, before any model is built or data read."""
    from mergekit_fw.settings import FWConfigError

    cfg = config(zoo["base"], [zoo["reverse"]], calibration=f"{zoo['calib']}/reverse.jsonl",
                 iterations=2, prepass="out_of_core", **option)  # fmt: skip
    with pytest.raises(FWConfigError, match=f"prepass: out_of_core .* {named}"):
        prepare(cfg, MergeOptions(quiet=True))
