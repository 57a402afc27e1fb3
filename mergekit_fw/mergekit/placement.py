"""Several GPUs for the in-memory pre-pass, through accelerate's device map.

When the estimate (mergekit/estimate.py) says that the in-memory pre-pass does not fit one
GPU, but fits the GPUs together, the base is loaded with a device map from accelerate's
`infer_auto_device_map`: whole decoder layers per device (the model's `_no_split_modules`),
each device's budget 80% of its free memory divided by what the pre-pass holds per byte of
weights (the weights, their gradient, which is also the direction, and a share of the
activations). transformers loads each layer straight onto its device and accelerate's hooks
move the activations between devices. Each tensor's gradient, LMO scores and direction
then stay on its layer's device, and the pool streams that tensor's vertices there
(`VertexPool.placement`). No distribution of our own: when even the GPUs together are too
small, the run goes out of core (fw/out_of_core.py) on one device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIT = 0.8  # of each device's free memory, as for one device (runner.choose_prepass)


@dataclass(frozen=True)
class Placement:
    """accelerate's device map (module prefix -> GPU index, or a device name) and what it
    implies."""

    device_map: dict[str, int | str]

    def device_of(self, name: str) -> torch.device:
        """The device of a parameter: its longest module prefix in the map."""
        best, where = -1, None
        for prefix, index in self.device_map.items():
            hit = prefix == "" or name == prefix or name.startswith(prefix + ".")
            if hit and len(prefix) > best:
                best, where = len(prefix), index
        if where is None:
            raise KeyError(f"{name} is in no module of the device map")
        return _device(where)

    @property
    def first(self) -> torch.device:
        """Where the calibration batches go (the embeddings' device: the first in the map)."""
        return _device(next(iter(self.device_map.values())))

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for where in self.device_map.values():
            counts[str(_device(where))] = counts.get(str(_device(where)), 0) + 1
        return ", ".join(f"{n} modules on {where}" for where, n in counts.items())


def _device(where: int | str) -> torch.device:
    return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)


def gpu_budgets() -> dict[int, int]:
    """Free bytes of every visible GPU (empty without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    return {i: int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())}


def plan_placement(
    model: torch.nn.Module, free: dict[int, int], per_weight_byte: float, dtype: torch.dtype
) -> Placement | None:
    """A device map of `model` (a meta-device skeleton is enough: only shapes are read)
    over GPUs with `free` bytes each, every byte of weights costing `per_weight_byte`;
    None where they do not hold it together (accelerate would offload to CPU or disk)."""
    from accelerate import infer_auto_device_map

    if len(free) < 2:
        return None
    max_memory = {i: int(FIT * bytes_ / per_weight_byte) for i, bytes_ in free.items()}
    max_memory["cpu"] = 0
    device_map = infer_auto_device_map(
        model,
        max_memory=max_memory,
        no_split_module_classes=list(getattr(model, "_no_split_modules", None) or []),
        dtype=dtype,
    )
    if any(not isinstance(where, int) for where in device_map.values()):
        return None  # "cpu" or "disk": the GPUs together are too small
    return Placement(dict(device_map))
