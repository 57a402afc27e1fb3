"""Reads of the pool. Per iteration: the LMO's scoring read also forms d = s - theta for
the predicted s (fw/scores.py `Fold`), bit for bit as the constraint would form it, and a
pass whose picks were predicted reads every vertex tensor exactly once. `init: auto`: the
base and every task-arithmetic start come from one read (fw/start_grid.py `score_rows`)."""

from __future__ import annotations

import pytest
import torch
from mergekit.common import ModelReference
from mergekit.io.tasks import LoaderCache
from mergekit.options import MergeOptions
from safetensors.torch import save_file

from mergekit_fw.fw.constraints import Box, Hull, Vertex
from mergekit_fw.fw.oracles import ZERO
from mergekit_fw.fw.scores import Fold, score_tensor
from mergekit_fw.pool import vertices
from mergekit_fw.pool.vertices import VertexPool
from tests.helpers import Pool

SHAPES = {"a.weight": (7, 11), "b.weight": (13,), "c.weight": (3, 40)}

CASES = [  # (constraint, coefficient row over [base, v1, v2, v3], members)
    (Hull("inner", "tensor", True), [0.0, 0.0, 1.0, 0.0], [2]),
    (Hull("inner", "tensor", True), [1.0, 0.0, 0.0, 0.0], [0]),
    (Hull("inner", "tensor", True), [0.0, 0.0, 0.0, 0.0], [ZERO]),
    (Box(0.6, "tensor"), [-0.2, 0.6, 0.0, 0.6], [1, 3]),
    (Box(0.6, "tensor"), [1.0, 0.0, 0.0, 0.0], []),
]


def _folders(tmp_path, dtype) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    paths = []
    for k in range(4):
        folder = tmp_path / f"v{k}"
        folder.mkdir()
        tensors = {n: torch.randn(s, generator=gen).to(dtype) for n, s in SHAPES.items()}
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        paths.append(str(folder))
    return paths


def _expected(constraint, pool, name, row, members, theta):
    out = torch.empty_like(theta)
    vertex = Vertex(torch.tensor([row], dtype=torch.float64), [members])
    constraint.direction_(pool, 0, name, vertex, theta, out)
    return out


def _check(pool, constraint, row, members):
    gen = torch.Generator().manual_seed(1)
    for name, shape in SHAPES.items():
        g, theta = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        plain = score_tensor(pool, name, g.clone(), theta, True)
        buffer = g.clone()  # d overwrites the gradient's own buffer, as in the loop
        fold = Fold(row, constraint.task_vector_form, buffer)
        scores = score_tensor(pool, name, buffer, theta, True, fold)
        assert fold.done
        assert [float(d) for d in scores.dots] == [float(d) for d in plain.dots]
        assert scores.current == plain.current and scores.grad_norm == plain.grad_norm
        assert torch.equal(buffer, _expected(constraint, pool, name, row, members, theta))


@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_blocked_fold_equals_the_constraints_direction(tmp_path, monkeypatch, stored, case):
    LoaderCache().setup(MergeOptions())
    refs = [ModelReference.parse(p) for p in _folders(tmp_path, stored)]
    pool = VertexPool(refs, torch.device("cpu"), torch.float32)
    monkeypatch.setattr(vertices, "BLOCK", 16)  # several blocks, the last one partial
    _check(pool, *CASES[case])


@pytest.mark.parametrize("case", range(len(CASES)))
def test_whole_tensor_fold_equals_the_constraints_direction(case):
    gen = torch.Generator().manual_seed(0)
    pool = Pool([{n: torch.randn(s, generator=gen) for n, s in SHAPES.items()} for _ in range(4)])
    pool.tensor = lambda k, name: pool.vertices[k][name].clone()
    _check(pool, *CASES[case])


@pytest.mark.e2e
def test_fold_with_adapter_vertices(zoo, loras):
    """Adapters: their base part folded with the base, s B A added from the factors."""
    from mergekit_fw.pool.lora_files import read_adapter
    from tests.helpers import ADAPTERS

    LoaderCache().setup(MergeOptions())
    adapters = [read_adapter(loras[task]) for task in ADAPTERS]
    pool = VertexPool([ModelReference.parse(zoo["base"])], torch.device("cpu"), torch.float32,
                      adapters)  # fmt: skip
    gen = torch.Generator().manual_seed(2)
    names = [n for n in pool.tensor_names(0) if "q_proj" in n or "v_proj" in n][:4]
    for constraint, row, members in [
        (Hull("inner", "tensor", True), [0.0, 0.0, 1.0, 0.0], [2]),
        (Box(0.5, "tensor"), [0.0, 0.5, 0.0, 0.5], [1, 3]),
    ]:
        for name in names:
            theta = pool.tensor(0, name) + 0.01 * torch.randn(pool.tensor(0, name).shape,
                                                                generator=gen)  # fmt: skip
            g = torch.randn(theta.shape, generator=gen)
            plain = score_tensor(pool, name, g.clone(), theta, False)
            fold = Fold(row, constraint.task_vector_form, g)
            scores = score_tensor(pool, name, g, theta, False, fold)
            assert fold.done
            assert [float(d) for d in scores.dots] == [float(d) for d in plain.dots]
            expected = _expected(constraint, pool, name, row, members, theta)
            torch.testing.assert_close(g, expected, rtol=0, atol=1e-6)


def _counting_reads(monkeypatch) -> dict:
    from mergekit_fw.pool.reader import TensorReader

    read = {"bytes": 0}
    stock = TensorReader.read

    def counting(self, *args, **kwargs):
        x = stock(self, *args, **kwargs)
        read["bytes"] += 0 if x is None else x.numel() * x.element_size()
        return x

    monkeypatch.setattr(TensorReader, "read", counting)
    return read


def test_a_predicted_lmo_pass_reads_each_vertex_tensor_once(tmp_path, monkeypatch):
    """Box, one tensor w of 50 floats, 4 vertices: the second pass with the same gradient
    predicts every pick and reads 4 x 200 bytes; a gradient that moves one candidate out of
    s costs the base and that candidate once more, and gives the same d as forming it anew."""
    from mergekit_fw.fw.loop import FrankWolfe, Slot
    from mergekit_fw.fw.objectives import Batch
    from mergekit_fw.settings import FWSettings
    from tests.helpers import Distance, Vector

    gen = torch.Generator().manual_seed(3)
    base, folders = torch.randn(50, generator=gen), []
    for k in range(4):  # task vectors on disjoint slices of w
        folder = tmp_path / f"v{k}"
        folder.mkdir()
        w = base.clone()
        if k:
            w[16 * (k - 1) : 16 * k + 2 * (k == 3)] += torch.randn(16 + 2 * (k == 3), generator=gen)
        save_file({"w": w}, str(folder / "model.safetensors"))
        folders.append(str(folder))
    LoaderCache().setup(MergeOptions())
    pool = VertexPool([ModelReference.parse(p) for p in folders], torch.device("cpu"),
                      torch.float32)  # fmt: skip
    model = Vector(pool.tensor(0, "w") + 0.1)
    dummy = torch.zeros(1, 1, dtype=torch.long)
    loop = FrankWolfe(
        model, [Slot("w", model.w)], pool, Distance([torch.zeros(50)]),
        [Batch(0, dummy, dummy, dummy, 1.0, 1)], ["t"],
        FWSettings(calibration="x", iterations=1, constraint="box", scale=0.5), quiet=True,
    )  # fmt: skip
    read = _counting_reads(monkeypatch)
    tau = [pool.tensor(k, "w") - pool.tensor(0, "w") for k in range(1, 4)]
    g = tau[2] - tau[0] - tau[1]  # descends along tau_1 and tau_2

    def lmo(gradient):
        model.w.grad = gradient.clone()
        before = read["bytes"]
        table, vertex = loop.lmo_pass(form_direction=True)
        return read["bytes"] - before, vertex, model.w.grad.clone()

    first, vertex, _ = lmo(g)
    assert vertex.members == [[1, 2]] and loop.folded == 0
    second, again, d = lmo(g)
    assert second == 4 * 200 and again.members == [[1, 2]] and loop.folded == 1
    expected = torch.empty(50)
    loop.constraint.direction_(pool, 0, "w", again, model.w.detach(), expected)
    assert torch.equal(d, expected)
    g2 = tau[2] - tau[0] + tau[1]  # tau_2 leaves s
    third, changed, d = lmo(g2)
    assert changed.members == [[1]] and loop.corrected == 1
    assert third == 4 * 200 + 2 * 200  # the base and tau_2's vertex once more
    loop.constraint.direction_(pool, 0, "w", changed, model.w.detach(), expected)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-6)


@pytest.mark.e2e
def test_the_fold_leaves_the_plan_as_it_was(zoo, monkeypatch):
    """A run with the fold and one without it give the same trajectory and coefficients
    (a corrected d differs from a freshly formed one by float32 rounding only)."""
    from mergekit_fw.fw.loop import FrankWolfe
    from mergekit_fw.mergekit.runner import prepare
    from tests.helpers import config

    models = [zoo["reverse"], zoo["add"], zoo["count"]]
    for constraint in ("box", "hull"):
        cfg = config(zoo["base"], models, calibration=f"{zoo['calib']}/two_tasks.yaml",
                     iterations=4, constraint=constraint, init="base")  # fmt: skip
        folded = {}

        def run(self, stock=FrankWolfe.run, folded=folded):
            out = stock(self)
            folded["n"] = self.folded
            return out

        with monkeypatch.context() as patch:
            patch.setattr(FrankWolfe, "run", run)
            plan = prepare(cfg, MergeOptions(quiet=True))
        assert folded["n"] == 3 * len(plan.coefficients)  # every iteration after the first
        with monkeypatch.context() as patch:
            patch.setattr(FrankWolfe, "_fold", lambda self, slot, i: None)
            unfolded = prepare(cfg, MergeOptions(quiet=True))
        assert [r.gamma for r in unfolded.iterations] == pytest.approx(
            [r.gamma for r in plan.iterations], abs=1e-6
        )
        for name, row in unfolded.coefficients.items():
            assert plan.coefficients[name] == pytest.approx(row, abs=1e-6)


@pytest.mark.e2e
def test_the_task_arithmetic_starts_come_from_one_read(zoo, monkeypatch):
    """score_rows over the builtin rows reads each vertex tensor once and gives the losses
    of forming each start in the model (float32 rounding apart)."""
    from mergekit_fw.fw.start_grid import builtin_rows, score_rows, set_combinations
    from mergekit_fw.settings import FWSettings
    from tests.helpers import start_problem

    paths = [zoo[k] for k in ("base", "reverse", "add", "count")]
    model, slots, pool, problem = start_problem(zoo, paths)
    loss = problem.loss_of(model)
    rows = builtin_rows(FWSettings(calibration="x", iterations=1), 3)
    assert len(rows) == 7  # the base and six task-arithmetic starts
    read = _counting_reads(monkeypatch)
    table, held = score_rows(rows, slots, pool, loss, model)
    pool_bytes = sum(
        r.entry(s.name).numel * r.entry(s.name).dtype.itemsize for s in slots for r in pool.readers
    )
    assert read["bytes"] == pool_bytes
    assert all(slot.param.grad is None for slot in slots)
    assert "forward" not in model.model.layers[0].__dict__  # the model has its forwards back
    # the parameters hold the lowest-loss start, formed without another read, as scored
    best = min(table, key=lambda e: e["loss"])
    assert held == best["row"] and read["bytes"] == pool_bytes
    assert loss() == pytest.approx(best["loss"], rel=1e-6)
    held_weights = {slot.name: slot.param.detach().clone() for slot in slots}
    formed, last = score_rows(rows, slots, pool, loss)  # no model: each start formed in place
    assert last == best["row"]  # and the best formed again
    assert [e["loss"] for e in table] == pytest.approx([e["loss"] for e in formed], rel=1e-5)
    set_combinations(slots, pool, best["row"])  # the chosen start formed from the pool
    for slot in slots:
        assert torch.allclose(held_weights[slot.name], slot.param, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_task_preferences_read_the_pool_once(zoo, monkeypatch):
    """Two calibration tasks: their preferences come from one read of the pool, and equal
    what scoring each task's gradient in its own pass gives."""
    from mergekit_fw.fw.loop import FrankWolfe
    from mergekit_fw.mergekit.runner import prepare
    from tests.helpers import config

    read = _counting_reads(monkeypatch)
    seen = {}
    stock = FrankWolfe.task_preferences

    def preferences(self):
        before = read["bytes"]
        found = stock(self)
        seen["bytes"] = read["bytes"] - before
        seen["pool"] = sum(
            r.entry(s.name).numel * r.entry(s.name).dtype.itemsize
            for s in self.slots
            for r in self.pool.readers
        )
        seen["separate"] = {}
        for index, name in enumerate(self.task_names):  # one pass per task, as before
            self.task_gradient(index, desc=name)
            table = self.score_pass()
            seen["separate"][name] = self.wins(self.constraint.lmo(table, origin=False))
        return found

    monkeypatch.setattr(FrankWolfe, "task_preferences", preferences)
    models = [zoo["reverse"], zoo["add"], zoo["count"]]
    cfg = config(zoo["base"], models, calibration=f"{zoo['calib']}/two_tasks.yaml",
                 iterations=2, init="base")  # fmt: skip
    plan = prepare(cfg, MergeOptions(quiet=True))
    assert set(plan.task_preferences) == {"reverse", "add"}
    assert seen["bytes"] == seen["pool"]
    assert plan.task_preferences == seen["separate"]
