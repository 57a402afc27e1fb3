"""`lora_mode: factors`: the authors' generative variant (fw_reference.md §2, G-hard).

theta is a set of LoRA factors on the frozen base; the vertices of each factor tensor are
the adapters' own A or B (vertex 0, the base, is the zero factor), and the output is a PEFT
LoRA adapter (mergekit/factor_writer.py). Its Delta W = s B_theta A_theta has cross terms
B_i A_j: it is not a convex combination of the adapters' weight updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mergekit_fw.fw.slots import Slot
from mergekit_fw.pool.labels import short_labels, unique_labels
from mergekit_fw.pool.lora_files import PEFT_PREFIX, Adapter, LoraModule
from mergekit_fw.settings import FWConfigError


def factor_keys(module: LoraModule) -> tuple[str, str]:
    """Keys of one module's factors in a PEFT adapter file (and of the pre-pass slots)."""
    if module.embedding:
        return (
            f"{PEFT_PREFIX}{module.module}.lora_embedding_A",
            f"{PEFT_PREFIX}{module.module}.lora_embedding_B",
        )
    return (
        f"{PEFT_PREFIX}{module.module}.lora_A.weight",
        f"{PEFT_PREFIX}{module.module}.lora_B.weight",
    )


@dataclass
class FactorLayout:
    """How the adapters' factors line up as one LoRA of rank `rank` (lora_mode: factors).

    If every module of every adapter has the same rank and scale, the output keeps that r,
    lora_alpha and use_rslora. Otherwise the output has rank max(r) and scale 1: each
    adapter's B is multiplied by its own scale and A/B are zero-padded to that rank, so
    s_out * B'_a A'_a = s_a B_a A_a for every adapter.
    """

    rank: int
    alpha: float
    use_rslora: bool
    fan_in_fan_out: bool
    task_type: str | None
    modules: dict[str, LoraModule]  # module name -> a representative (shapes, embedding)
    keys: dict[str, tuple[str, str]]  # factor key -> (module name, "A" | "B")
    scale: float

    def shape(self, key: str) -> tuple[int, int]:
        module, kind = self.keys[key]
        m = self.modules[module]
        return (self.rank, m.shape_a[1]) if kind == "A" else (m.shape_b[0], self.rank)


def factor_layout(adapters: Sequence[Adapter]) -> FactorLayout:
    all_modules = [m for a in adapters for m in a.modules.values()]
    pairs = {(m.rank, m.scale) for m in all_modules}
    first = adapters[0].config
    rank = max(m.rank for m in all_modules)
    if len(pairs) == 1:
        alpha = first.get("lora_alpha", 8)
        rslora = bool(first.get("use_rslora", False))
        scale = next(iter(pairs))[1]
    else:
        alpha, rslora, scale = rank, False, 1.0
    modules: dict[str, LoraModule] = {}
    for m in all_modules:
        seen = modules.setdefault(m.module, m)
        if (seen.shape, seen.embedding) != (m.shape, m.embedding):
            raise FWConfigError(
                f"lora_mode: factors: adapters disagree on module {m.module} "
                f"({list(seen.shape)} vs {list(m.shape)})."
            )
    keys = {}
    for name in sorted(modules):
        key_a, key_b = factor_keys(modules[name])
        keys[key_a], keys[key_b] = (name, "A"), (name, "B")
    return FactorLayout(
        rank=rank, alpha=alpha, use_rslora=rslora,
        fan_in_fan_out=bool(first.get("fan_in_fan_out", False)),
        task_type=first.get("task_type"), modules=modules, keys=keys, scale=scale,
    )  # fmt: skip


class FactorPool:
    """Vertices of lora_mode: factors: index 0 the base (zero factors), 1..n the adapters."""

    def __init__(self, base_id: str, base_label: str, adapters: Sequence[Adapter], layout):
        self.adapters = list(adapters)
        self.layout = layout
        self.refs = [base_id]
        self.ids = [base_id] + [a.id for a in self.adapters]
        self.labels = [base_label] + unique_labels([base_label], [a.label for a in self.adapters])
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return 1 + len(self.adapters)

    def tensor(self, k: int, name: str) -> torch.Tensor:
        """Factor `name` of vertex k, rank-padded, with the adapter's scale folded into B."""
        out = torch.zeros(self.layout.shape(name), dtype=torch.float32, device=self.device)
        if k == 0:
            return out
        adapter = self.adapters[k - 1]
        module_name, kind = self.layout.keys[name]
        module = adapter.modules.get(f"{module_name}.weight")
        if module is None:  # the authors' rule: a missing module is a zero factor
            return out
        a, b = adapter.factors(module, self.device, torch.float32)
        if kind == "A":
            out[: module.rank].copy_(a)
        else:
            out[:, : module.rank].copy_(b).mul_(module.scale / self.layout.scale)
        return out


def _slot_key(param_name: str) -> str:
    return param_name.replace(".default.", ".").removesuffix(".default")


def factor_problem(model: torch.nn.Module, recipe, device: torch.device):
    """Wrap the base in a PEFT LoRA whose factors are theta; returns (model, slots, pool)."""
    from peft import LoraConfig, get_peft_model

    layout = factor_layout(recipe.adapters)
    config = LoraConfig(
        r=layout.rank, lora_alpha=layout.alpha, use_rslora=layout.use_rslora,
        target_modules=sorted(layout.modules), lora_dropout=0.0, bias="none",
        fan_in_fan_out=layout.fan_in_fan_out,
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    peft_model.to(device)
    slots = []
    for name, param in peft_model.named_parameters():
        if "lora_" not in name:
            continue
        key = _slot_key(name)
        if key not in layout.keys or tuple(param.shape) != layout.shape(key):
            raise RuntimeError(f"PEFT created {name} {list(param.shape)}, not in the factor layout")
        with torch.no_grad():
            param.zero_()  # theta starts at the base; init: task_arithmetic adds the factors
        slots.append(Slot(key, param))
    pool = FactorPool(str(recipe.base), short_labels([recipe.base])[0], recipe.adapters, layout)
    pool.device = device
    return peft_model, slots, pool
