"""Forward and backward of a model whose weights are never all in memory.

The model is a skeleton: its parameters live on the meta device, so it holds no weights.
Its blocks (every decoder layer, and each other module that holds parameters: embeddings,
final norm, head) get a forward that first materialises the block's weights from a
`weights(name)` callable (the FW iterate, or the iterate moved along the direction), runs,
and drops them again. With autograd on, a block runs inside a custom autograd function that
keeps only its input (the activation at the block boundary); on the way back it
re-materialises the weights, recomputes the block from that input with autograd on,
back-propagates the incoming gradient, hands each parameter's gradient to `sink(name, grad)`
and frees everything but the gradient of its input. Peak memory: about one block's weights
and gradients, the boundary activations of one batch, and what the sink holds; it does not
grow with depth. The model's own forward runs unchanged (masks, rotary embeddings, heads),
so any transformers model whose parameters sit in such blocks works.

Tied parameters (one tensor in two blocks, e.g. embeddings and an LM head) get their
gradient from each block; the sink receives each part and adds them (`TensorStore.add_`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

Weights = Callable[[str], torch.Tensor]
Sink = Callable[[str, torch.Tensor], None]


@dataclass
class Block:
    """One module run as a unit: (owner module, attribute, checkpoint name) per parameter."""

    module: torch.nn.Module
    params: list[tuple[torch.nn.Module, str, str]]


def find_blocks(model: torch.nn.Module, names: dict[int, str]) -> list[Block]:
    """Every element of the model's largest ModuleList (its layers) is a block, and so is
    each other module holding parameters outside it; `names` maps id(param) to its
    checkpoint name (the loop's slots)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    layers = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=None)
    blocks: list[Block] = []

    def block_of(module: torch.nn.Module) -> Block:
        params = []
        for owner in module.modules():
            for attr, param in owner.named_parameters(recurse=False):
                params.append((owner, attr, names[id(param)]))
        return Block(module, params)

    def visit(module: torch.nn.Module) -> None:
        if module is layers:
            blocks.extend(block_of(layer) for layer in layers)
            return
        if not any(True for _ in module.parameters()):
            return
        if layers is not None and any(m is layers for m in module.modules()):
            if any(True for _ in module.parameters(recurse=False)):
                raise ValueError(
                    f"{type(module).__name__} holds parameters of its own beside its layers; "
                    "the out-of-core pre-pass cannot split it into blocks"
                )
            for child in module.children():
                visit(child)
            return
        blocks.append(block_of(module))

    visit(model)
    return blocks


class Offloaded:
    """A skeleton model whose blocks materialise their weights on demand."""

    def __init__(self, model: torch.nn.Module, names: dict[int, str], device: torch.device):
        self.model, self.device = model, device
        config = getattr(model, "config", None)
        self._use_cache = getattr(config, "use_cache", None)
        if self._use_cache is not None:
            config.use_cache = False  # a cache would grow again when backward recomputes
        self.blocks = find_blocks(model, names)
        self.weights: Weights | None = None  # set for each pass (`use`)
        self.sink: Sink | None = None
        # a leaf that requires grad: makes every block's output differentiable, so that
        # backward reaches blocks whose inputs are token ids
        self._anchor = torch.zeros((), device=device, requires_grad=True)
        # a forward already set on the instance (accelerate's device hooks) is kept under ours
        self._own_forwards = [block.module.__dict__.get("forward") for block in self.blocks]
        for index, block in enumerate(self.blocks):
            block.module.forward = self._wrapped(index, block.module.forward)

    def release(self) -> None:
        """Give the blocks their own forwards back (a real model borrowed for a while)."""
        for block, own in zip(self.blocks, self._own_forwards):
            block.module.__dict__.pop("forward", None)
            if own is not None:
                block.module.forward = own
        if self._use_cache is not None:
            self.model.config.use_cache = self._use_cache

    @contextlib.contextmanager
    def use(self, weights: Weights, sink: Sink | None = None) -> Iterator[None]:
        """Run the model's passes with these weights (and this gradient sink)."""
        self.weights, self.sink = weights, sink
        try:
            yield
        finally:
            self.weights, self.sink = None, None

    @contextlib.contextmanager
    def materialised(self, index: int, grad: bool) -> Iterator[dict[str, torch.nn.Parameter]]:
        """The block's weights in place of its meta parameters, for the duration."""
        if self.weights is None:
            raise RuntimeError("Offloaded model run outside `use(weights)`")
        block = self.blocks[index]
        saved, made = [], {}
        for owner, attr, name in block.params:
            param = made.get(name)
            if param is None:
                param = torch.nn.Parameter(self.weights(name), requires_grad=grad)
                made[name] = param
            saved.append((owner, attr, owner._parameters[attr]))
            owner._parameters[attr] = param
        try:
            yield made
        finally:
            for owner, attr, meta in saved:
                owner._parameters[attr] = meta

    def _wrapped(self, index: int, forward):
        engine = self

        def run(*args, **kwargs):
            if not torch.is_grad_enabled():
                with engine.materialised(index, grad=False):
                    return forward(*args, **kwargs)
            slots = [i for i, a in enumerate(args) if _differentiable(a)]
            inputs = [args[i] for i in slots]

            def call(*xs):
                full = list(args)
                for i, x in zip(slots, xs):
                    full[i] = x
                return forward(*full, **kwargs)

            return _BlockFunction.apply(engine, index, call, engine._anchor, *inputs)

        return run


def _differentiable(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad


class _BlockFunction(torch.autograd.Function):
    """A block that keeps only its inputs; weights and inner activations are rebuilt in
    backward (activation checkpointing, with the weights checkpointed too)."""

    @staticmethod
    def forward(ctx, engine: Offloaded, index: int, call, anchor, *inputs):
        ctx.engine, ctx.index, ctx.call = engine, index, call
        ctx.save_for_backward(*inputs)
        with engine.materialised(index, grad=False):
            out = call(*inputs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"block {type(engine.blocks[index].module).__name__} returned "
                f"{type(out).__name__}; the out-of-core pre-pass needs blocks that return "
                "one tensor"
            )
        return out

    @staticmethod
    def backward(ctx, grad_out):
        engine: Offloaded = ctx.engine
        inputs = [x.detach().requires_grad_(True) for x in ctx.saved_tensors]
        with engine.materialised(ctx.index, grad=True) as params:
            with torch.enable_grad():
                out = ctx.call(*inputs)
            names = list(params)
            grads = torch.autograd.grad(
                out, [*inputs, *params.values()], grad_out, allow_unused=True
            )
            del out
        input_grads, param_grads = grads[: len(inputs)], grads[len(inputs) :]
        if engine.sink is not None:
            for name, g in zip(names, param_grads):
                if g is not None:
                    engine.sink(name, g)
        return (None, None, None, None, *input_grads)


class TensorStore:
    """One model-sized quantity (the iterate, its gradient) on disk, a file per tensor.

    Read with `readinto` into a fresh buffer and written whole, so nothing stays resident
    after use (no memory maps) and the bytes moved are the bytes counted by the OS.
    """

    def __init__(self, folder: str | os.PathLike, device: torch.device):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.meta: dict[str, tuple[torch.Size, torch.dtype]] = {}

    def _path(self, name: str) -> Path:
        return self.folder / (name.replace("/", "%") + ".bin")

    def put(self, name: str, x: torch.Tensor) -> None:
        x = x.detach().to("cpu").contiguous()
        with open(self._path(name), "wb") as handle:
            handle.write(x.reshape(-1).view(torch.uint8).numpy().data)
        self.meta[name] = (x.shape, x.dtype)

    def get(self, name: str) -> torch.Tensor:
        shape, dtype = self.meta[name]
        out = torch.empty(shape, dtype=dtype)
        with open(self._path(name), "rb") as handle:
            handle.readinto(out.reshape(-1).view(torch.uint8).numpy().data)
        return out.to(self.device)

    def add_(self, name: str, x: torch.Tensor) -> None:
        """Accumulate (gradients over batches and tied blocks)."""
        if name in self.meta:
            x = self.get(name).add_(x.to(self.device, self.meta[name][1]))
        self.put(name, x)

    def clear(self) -> None:
        for name in list(self.meta):
            self._path(name).unlink(missing_ok=True)
        self.meta.clear()

    def remove(self) -> None:
        self.clear()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


@contextlib.contextmanager
def scratch_folder(parent: Path | None) -> Iterator[Path]:
    """A folder for stores that live for one pass: under `parent` (the run's scratch) or a
    temporary one; removed afterwards, whatever happens."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="mergekit_fw_", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
