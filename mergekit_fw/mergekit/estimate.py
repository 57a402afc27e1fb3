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

import re
from dataclasses import asdict, dataclass

import torch

RUNTIME = 350 * 2**20  # torch + transformers + mergekit, imported, before any weight
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
    ties_peak: int  # stock mergekit TIES of the same pool
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
            ("peak memory, mergekit TIES", f"{self.ties_peak / gib:.2f} GiB"),
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
    hidden: int = 0,
) -> Estimate:
    """The estimate from tensor shapes (name -> shape of the base) and the pool's bytes."""
    size = torch.empty((), dtype=dtype).element_size()
    numels = {name: _numel(shape) for name, shape in shapes.items()}
    params = sum(numels.values())
    model = params * size
    blocks: dict[str, int] = {}
    for name, numel in numels.items():
        blocks[block_key(name)] = blocks.get(block_key(name), 0) + numel * size
    block = max(blocks.values(), default=0)
    tensor = max(numels.values(), default=0) * size
    # activations of one batch (`batch_tokens`: its padded size) at every block boundary
    boundary = batch_tokens * hidden * size * (len(blocks) + 1)
    auto_ties = settings is not None and settings.init == "auto"
    in_memory = RUNTIME + 2 * model + (model if auto_ties else 0) + 2 * tensor + 4 * boundary
    # one block's weights, their gradient and the recomputed block; a vertex tensor; the
    # head's logits are part of the runtime's share
    out_of_core = RUNTIME + 3 * block + 3 * tensor + 2 * boundary
    scratch = 6 * model  # theta and gradient: forward, backward, LMO, direction, move
    line_search = 2 * model * 2  # two forward passes over theta + gamma d
    return Estimate(
        parameters=params,
        model_bytes=model,
        largest_block_bytes=block,
        largest_tensor_bytes=tensor,
        pool_bytes=pool_bytes,
        vertices=vertices,
        in_memory_peak=in_memory,
        out_of_core_peak=out_of_core,
        reads_in_memory=2 * pool_bytes,
        reads_out_of_core=2 * pool_bytes + scratch + line_search,
        ties_peak=RUNTIME + (vertices + 2) * tensor,
        ties_reads=pool_bytes,
    )


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def estimate_pool(pool, settings, dtype: torch.dtype, batch_tokens: int = 0) -> Estimate:
    """The estimate of a VertexPool (pool/vertices.py): headers only."""
    names = pool.tensor_names(0)
    shapes, pool_bytes, hidden = {}, 0, 0
    for k, reader in enumerate(pool.readers):
        for name in names:
            entry = reader.entry(name) if reader is not None else None
            if entry is None:
                continue
            if k == 0:
                shapes[name] = entry.shape
                if len(entry.shape) == 2:
                    hidden = max(hidden, min(entry.shape))
            pool_bytes += entry.numel * torch.empty((), dtype=entry.dtype).element_size()
    for adapter in getattr(pool, "adapters", []):
        pool_bytes += adapter_bytes(adapter)
    return estimate_tensors(shapes, pool_bytes, len(pool), dtype, settings, batch_tokens, hidden)


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
