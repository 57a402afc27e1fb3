"""examples/vision_vit.py's pieces on a tiny ViT: experts on disk, the FW merge, task
arithmetic picked on calibration, held-out scores; and the zoo's prototype heads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mergekit_fw.cli import toy_vit as tv

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(dim=16, depth=1, heads=2, mlp=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: one thread is several times faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("vision_vit", ROOT / "examples" / "vision_vit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def splits():
    return tv.digits_splits()


def test_prototype_head_is_fixed_by_the_seed_and_scores_the_base(splits):
    base = tv.TinyViT(**SHAPE)
    images, labels = tv.TASK["parity"].apply(*splits["train"])
    a = tv.prototype_head(base, 2, images, labels, seed=3)
    b = tv.prototype_head(base, 2, images, labels, seed=3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not a.weight.requires_grad
    with torch.no_grad():
        features = base(images)
    centred = features - features.mean(dim=0)
    # rows are unit prototypes times one scale: a typical centred feature gives logits ~SCALE
    scale = a.weight.norm(dim=1)
    assert torch.allclose(scale, scale[0].expand_as(scale))
    assert float(scale[0] * centred.norm(dim=1).median()) == pytest.approx(tv.SCALE, rel=1e-4)


def test_example_pieces_run_on_a_tiny_vit(example, splits, tmp_path):
    torch.manual_seed(0)
    tasks = ["rot90", "parity"]
    base = tv.pretrain(splits, steps=20, **SHAPE)
    files, heads = example.make_experts(base, splits, tasks, tmp_path, steps=10)
    assert [Path(f).name for f in files] == ["rot90.safetensors", "parity.safetensors"]
    before = {k: v.clone() for k, v in base.state_dict().items()}
    options = dict(example.FW_OPTIONS, iterations=1, inner_steps=2)
    merged, plan = example.fw_merge(base, files, heads, splits, tasks, **options)
    assert plan.labels == ["base", "rot90", "parity"]
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # left as is
    assert any(not torch.equal(before[k], merged[k]) for k in before)
    arithmetic, lam = example.task_arithmetic(base, files, heads, splits, tasks)
    assert lam in example.TA_GRID
    for state in (before, arithmetic, merged):
        for t in tasks:
            assert 0.0 <= example.accuracy(base, state, heads, splits, t) <= 1.0
