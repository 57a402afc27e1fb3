"""What a pre-pass will cost, from safetensors headers alone (no weight is read).

`estimate_pool` sizes a run before it starts: the bytes of one model in the merge dtype,
its largest block (a decoder layer, or the embeddings / head), the pool's bytes on disk,
and from them the peak memory of the in-memory and the out-of-core pre-pass, the bytes
each reads per iteration, and the same for stock mergekit's TIES of the pool. `prepass:
auto` compares the in-memory peak with the math device's free memory; `mergekit-fw check
--estimate` prints the table. The constants are calibrated on benchmarks/scale (its
results file records the estimate beside every measured figure).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

RUNTIME = 480 * 2**20  # torch, transformers, mergekit, datasets imported (measured: 474 MiB)
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass
class Estimate:
    parameters: int  # merged parameters (the base's tensors)
    model_bytes: int  # one model in the merge dtype
    largest_block_bytes: int
    largest_tensor_bytes: int
    pool_bytes: int  # base + candidates as stored on disk (adapters: their files)
    vertices: int
    in_memory_peak: int
    out_of_core_peak: int
    reads_in_memory: int  # per FW iteration
    reads_out_of_core: int  # per FW iteration, scratch traffic included
    ties_peak: int  # stock mergekit TIES of the same pool: peak RSS, mapped inputs included
    ties_needed: int  # the same without the mapped inputs (reclaimable page cache)
    ties_reads: int

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        gib = 2**30
        rows = [
            ("parameters", f"{self.parameters / 1e6:.1f} M"),
            ("one model (merge dtype)", f"{self.model_bytes / gib:.2f} GiB"),
            ("pool on disk", f"{self.pool_bytes / gib:.2f} GiB ({self.vertices} vertices)"),
            ("peak memory, FW in memory", f"{self.in_memory_peak / gib:.2f} GiB"),
            ("peak memory, FW out of core", f"{self.out_of_core_peak / gib:.2f} GiB"),
            ("memory needed, mergekit TIES", f"{self.ties_needed / gib:.2f} GiB"),
            ("peak RSS, mergekit TIES (+ mapped inputs)", f"{self.ties_peak / gib:.2f} GiB"),
            ("reads per FW iteration, in memory", f"{self.reads_in_memory / gib:.2f} GiB"),
            ("reads per FW iteration, out of core", f"{self.reads_out_of_core / gib:.2f} GiB"),
            ("reads, mergekit TIES (whole merge)", f"{self.ties_reads / gib:.2f} GiB"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def block_key(name: str) -> str:
    """Tensors of one decoder layer share a key (`model.layers.7`); others stand alone."""
    match = _LAYER.search(name)
    return name[: match.end() - 1] if match else name


def estimate_tensors(
    shapes: dict[str, tuple[int, ...]],
    pool_bytes: int,
    vertices: int,
    dtype: torch.dtype,
    settings=None,
    batch_tokens: int = 0,
) -> Estimate:
    """The estimate from tensor shapes (name -> shape of the base), the pool's bytes and the
    tokens of the largest padded calibration batch (rows x longest sample)."""
    size = dtype.itemsize
    numels = {name: math.prod(shape) for name, shape in shapes.items()}
    params = sum(numels.values())
    model = params * size
    blocks: dict[str, int] = {}
    for name, numel in numels.items():
        key = block_key(name)
        blocks[key] = blocks.get(key, 0) + numel
    layers = sum(1 for key in blocks if _LAYER.search(key + "."))
    block = max(blocks.values(), default=0) * size
    largest = max(shapes.values(), key=math.prod, default=(0,))
    tensor = math.prod(largest) * size
    # the largest 2-D tensor is the embedding (or head): vocabulary x hidden
    vocab, hidden = (max(largest), min(largest)) if len(largest) == 2 else (0, 1)
    logits = 4 * batch_tokens * vocab * 4  # float32 logits, log-softmax and their grads
    # one decoder layer's activations for one batch: ~2 values per weight column
    layer_activations = 2 * batch_tokens * (max(blocks.values(), default=0) // hidden) * size
    boundary = batch_tokens * hidden * size * (layers + 2)
    auto_ties = settings is not None and settings.init == "auto"
    in_memory = RUNTIME + (3 if auto_ties else 2) * model + 2 * tensor + logits
    in_memory += layers * layer_activations
    # one block's weights, gradients and recomputed copy; the head's and embedding's
    # weights and gradients; a streamed vertex tensor; the logits; boundary activations
    out_of_core = RUNTIME + 3 * block + 4 * tensor + logits + layer_activations + boundary
    # theta and gradient per iteration: forward, backward, LMO, direction, move (6 model
    # reads); two quadratic line-search passes over theta + gamma d (4)
    scratch = 10 * model
    return Estimate(
        parameters=params,
        model_bytes=model,
        largest_block_bytes=block,
        largest_tensor_bytes=tensor,
        pool_bytes=pool_bytes,
        vertices=vertices,
        in_memory_peak=in_memory,
        out_of_core_peak=out_of_core,
        # the LMO's one read; a tensor whose pick changed reads its changed vertices again
        # (fw/scores.py Fold), which this figure leaves out
        reads_in_memory=pool_bytes,
        reads_out_of_core=pool_bytes + scratch,
        # mergekit maps every input (resident once read) and holds the output until a shard
        # (5 GB by default) is full
        ties_peak=RUNTIME + pool_bytes + min(model, 5 * 10**9),
        # all vertices of one tensor at once (GatherTensors), plus the output shard
        ties_needed=RUNTIME + (vertices + 1) * tensor + min(model, 5 * 10**9),
        ties_reads=pool_bytes,
    )


def estimate_pool(pool, settings, dtype: torch.dtype, batch_tokens: int = 0) -> Estimate:
    """The estimate of a VertexPool (pool/vertices.py): headers only."""
    names = pool.tensor_names(0)
    shapes, pool_bytes = {}, 0
    for k, reader in enumerate(pool.readers):
        for name in names:
            entry = reader.entry(name) if reader is not None else None
            if entry is None:
                continue
            if k == 0:
                shapes[name] = entry.shape
            pool_bytes += entry.numel * entry.dtype.itemsize
    for adapter in getattr(pool, "adapters", []):
        pool_bytes += adapter_bytes(adapter)
    return estimate_tensors(shapes, pool_bytes, len(pool), dtype, settings, batch_tokens)


def adapter_bytes(adapter) -> int:
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(adapter.path).glob("*.safetensors"))


def device_free_bytes(device: torch.device) -> int | None:
    """Free memory of the math device: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate_recipe(recipe, pool, dtype: torch.dtype) -> Estimate:
    """The estimate of a checked recipe (mergekit/checks.py) over its vertex pool."""
    tokens = 0
    if recipe.calibration is not None and recipe.calibration.n_samples:
        samples = [s for task in recipe.calibration.tasks for s in task.samples]
        rows = min(recipe.settings.batch_size, len(samples))
        tokens = rows * max(len(s.input_ids) for s in samples)
    return estimate_pool(pool, recipe.settings, dtype, tokens)
