"""Reads without memory maps, blocked LMO scores, and the streamed write phase."""

from __future__ import annotations

import pytest
import torch
from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration
from mergekit.io.tasks import LoaderCache
from mergekit.options import MergeOptions
from safetensors.torch import load_file, save_file

from mergekit_fw.pool import vertices
from mergekit_fw.pool.reader import TensorReader, read_header
from mergekit_fw.pool.vertices import VertexPool


def test_reader_matches_safetensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a": torch.randn(5, 7, generator=gen).to(torch.bfloat16),
        "b": torch.randn(11, generator=gen),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d": torch.randn(3, 2, generator=gen, dtype=torch.float64).to(torch.float16),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert set(read_header(str(path))) == set(tensors)

    class Index:  # the fields of mergekit's ShardedTensorIndex the reader uses
        base_path, is_safetensors = str(tmp_path), True
        tensor_paths = dict.fromkeys(tensors, "model.safetensors")

    reader = TensorReader(Index())
    for name, expected in load_file(str(path)).items():
        got = reader.read(name)
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    flat = tensors["a"].reshape(-1)
    buffer = torch.empty(20, dtype=torch.bfloat16)
    assert torch.equal(reader.read("a", 3, 17, out=buffer), flat[3:17])
    assert reader.read("missing") is None


def _pool(zoo, paths=None) -> VertexPool:
    LoaderCache().setup(MergeOptions())
    paths = paths or [zoo[k] for k in ("base", "reverse", "add", "count")]
    refs = [ModelReference.parse(p) for p in paths]
    return VertexPool(refs, torch.device("cpu"), torch.float32)


def _bf16_copies(zoo, root) -> list[str]:
    """The toy zoo stored in bfloat16, as most released checkpoints are."""
    paths = []
    for key in ("base", "reverse", "add", "count"):
        folder = root / key
        folder.mkdir()
        tensors = load_file(f"{zoo[key]}/model.safetensors")
        bf16 = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
        save_file(bf16, str(folder / "model.safetensors"), metadata={"format": "pt"})
        paths.append(str(folder))
    return paths


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])
@pytest.mark.parametrize("with_norms", [False, True])
def test_blocked_scores_equal_whole_tensor_scores(zoo, tmp_path, monkeypatch, with_norms, stored):
    pool = _pool(zoo, _bf16_copies(zoo, tmp_path) if stored == "bfloat16" else None)
    monkeypatch.setattr(vertices, "BLOCK", 37)  # many blocks, the last one partial
    gen = torch.Generator().manual_seed(1)
    for name in pool.tensor_names(0)[:6]:
        g = torch.randn(pool.tensor(0, name).shape, generator=gen)
        theta = torch.randn(g.shape, generator=gen)
        scores = pool.score_tensor(name, g, theta, with_norms)
        assert len(scores.dots) == len(pool)
        assert scores.grad_norm == pytest.approx(float(g.double().norm()), rel=1e-5)
        assert scores.current == pytest.approx(
            float((g.double() * theta).sum()), rel=1e-4, abs=1e-5
        )
        for k, dot in enumerate(scores.dots):
            x = pool.tensor(k, name).double()
            assert float(dot) == pytest.approx(float((g.double() * x).sum()), rel=1e-5, abs=1e-5)
            if with_norms:
                assert float(scores.norms[k]) == pytest.approx(float(x.norm()), rel=1e-5)


def test_write_phase_never_gathers_the_candidates(zoo, tmp_path, monkeypatch):
    """mergekit's LoadTensor would hold all n + 1 inputs of a tensor at once: during a
    frank_wolfe write it must not load a single candidate tensor."""
    from mergekit.io import tasks

    from mergekit_fw.mergekit.runner import run_fw_merge
    from mergekit_fw.plan import FWPlan

    loaded: list[str] = []
    stock = tasks.LoadTensor.execute

    def spy(self):
        loaded.append(str(self.model))
        return stock(self)

    monkeypatch.setattr(tasks.LoadTensor, "execute", spy)
    config = MergeConfiguration.model_validate(
        {
            "merge_method": "frank_wolfe",
            "base_model": zoo["base"],
            "models": [{"model": zoo[k]} for k in ("reverse", "add")],
            "dtype": "float32",
            "parameters": {
                "calibration": f"{zoo['calib']}/reverse.jsonl",
                "iterations": 2,
                "line_search_evals": 3,
                "constraint": "hull",
                "init": "base",  # init: auto's TIES start is merged by mergekit's loader
            },
        }
    )
    out = tmp_path / "out"
    run_fw_merge(config, str(out), MergeOptions(quiet=True))
    assert zoo["reverse"] not in loaded and zoo["add"] not in loaded
    plan = FWPlan.load(out / "fw_plan.json")
    written = load_file(str(out / "model.safetensors"))
    pool = _pool(zoo)
    for name, row in plan.coefficients.items():
        expected = sum(c * pool.tensor(k, name) for k, c in enumerate(row))
        torch.testing.assert_close(written[name], expected, atol=1e-6, rtol=0)
