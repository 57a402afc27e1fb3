"""The writer of `lora_mode: factors`: the plan's factors as a PEFT LoRA adapter folder.

mergekit cannot write an adapter, so this variant bypasses its executor; every factor is
recomputed from the adapters' files (pool/lora_factors.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mergekit_fw.pool.lora_factors import FactorPool, factor_layout
from mergekit_fw.pool.lora_files import WEIGHTS_FILE, adapter_from_id
from mergekit_fw.pool.reader import tensor_shapes

LOG = logging.getLogger("mergekit_fw")


def _target_modules(modules: Sequence[str], base_path: str) -> list[str]:
    """Module suffixes (q_proj, ...) when they cover exactly these modules, else full names."""
    suffixes = sorted({m.rsplit(".", 1)[-1] for m in modules})
    try:
        shapes = tensor_shapes(base_path) if os.path.isdir(base_path) else {}
    except Exception:  # an unreadable base only costs the short form
        shapes = {}
    covered = {
        n[: -len(".weight")]
        for n, shape in shapes.items()
        if n.endswith(".weight") and len(shape) == 2
        and n[: -len(".weight")].rsplit(".", 1)[-1] in suffixes
    }  # fmt: skip
    return suffixes if covered == set(modules) else sorted(modules)


def write_factor_adapter(plan, out_path: str, dtype: torch.dtype | None = None) -> Path:
    """Write the plan of a lora_mode: factors run as a PEFT adapter folder.

    Every factor is sum_k c_k V_k over [base (zero), adapters], recomputed from the adapters'
    files in float64 (as the dense kernel recomputes the weights from the checkpoints).
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    ids = plan.models[1:]
    adapters = [adapter_from_id(i, plan.adapters[i]) for i in ids]
    layout = factor_layout(adapters)
    pool = FactorPool(plan.models[0], plan.labels[0], adapters, layout)
    tensors = {}
    for name in plan.tensors:
        total = torch.zeros(layout.shape(name), dtype=torch.float64)
        for k, c in enumerate(plan.coefficients[name]):
            if k and c:
                total.add_(pool.tensor(k, name).double(), alpha=c)
        tensors[name] = total.to(dtype or torch.float32).contiguous()
    out = Path(out_path)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = LoraConfig(
        r=layout.rank, lora_alpha=layout.alpha, use_rslora=layout.use_rslora,
        target_modules=_target_modules(sorted(layout.modules), plan.base_model),
        lora_dropout=0.0, bias="none", fan_in_fan_out=layout.fan_in_fan_out,
        base_model_name_or_path=plan.base_model, task_type=layout.task_type,
        inference_mode=True,
    )  # fmt: skip
    config.save_pretrained(str(out))
    labels = ", ".join(plan.labels[1:])
    (out / "README.md").write_text(
        "---\n"
        f"base_model: {plan.base_model}\n"
        "library_name: peft\n"
        "tags:\n- mergekit\n- frank-wolfe\n- lora\n"
        "---\n\n"
        "# LoRA adapter merged with Frank-Wolfe (`lora_mode: factors`)\n\n"
        f"The authors' generative FW_hard on the LoRA factors of {len(adapters)} adapters "
        f"({labels}): the A and B factors are combined separately, so the weight update "
        "s B A is not a convex combination of the adapters' updates. Load it with "
        "`PeftModel.from_pretrained(base, this_folder)`.\n",
        encoding="utf-8",
    )
    LOG.info("LoRA adapter (lora_mode: factors) written to %s", out)
    return out
