"""PEFT LoRA adapter folders as Frank-Wolfe vertices: what is read, and when.

An adapter `a` of the base W0 is the vertex v_a = W0 + s_a B_a A_a on every tensor it
targets and v_a = W0 on every other tensor, with s_a = alpha / r (alpha / sqrt(r) for
rsLoRA). Parsing reads the adapter's config and safetensors header only; factors are read
one module at a time when the LMO or the writer needs them (`Adapter.factors`). Adapters
never go through mergekit's LoaderCache (that is what densifies `base+adapter` references).
The arithmetic on the factors is in lora_math.py, the checks against the base in
lora_checks.py, and the authors' factor-space variant in lora_factors.py.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergekit_fw.pool import safetensors_header
from mergekit_fw.pool.integrity import FIX, safetensors_problem
from mergekit_fw.settings import FWConfigError

ADAPTER_PREFIX = "adapter:"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_LINEAR_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_[AB])(?:\.[\w-]+)?\.weight$")
_EMBEDDING_KEY = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<kind>[AB])(?:\.[\w-]+)?$")

# adapter_config.json features that make the update something other than W0 + s B A
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora: true) rescales the columns of W0 + s B A by a trained magnitude",
    "lora_bias": "a trained LoRA bias (lora_bias: true)",
    "use_qalora": "QALoRA (use_qalora: true)",
    "layer_replication": "layer_replication",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "target_parameters": "LoRA on nn.Parameter targets (target_parameters)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
    "modules_to_save": "fully trained extra modules (modules_to_save)",
    "use_bdlora": "BD-LoRA (use_bdlora)",
    "arrow_config": "Arrow routing (arrow_config)",
    "kasa_config": "KaSA (kasa_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "velora_config": "VeLoRA (velora_config)",
    "megatron_config": "Megatron parallel layers (megatron_config)",
}


# -- one adapter --------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraModule:
    """One targeted base tensor: Delta W = scale * B @ A, transposed when `transpose`."""

    module: str  # PEFT module name, e.g. model.layers.0.self_attn.q_proj
    tensor: str  # base checkpoint tensor, e.g. model.layers.0.self_attn.q_proj.weight
    key_a: str  # safetensors keys of the factors
    key_b: str
    shape_a: tuple[int, ...]  # [r, in]
    shape_b: tuple[int, ...]  # [out, r]
    scale: float
    transpose: bool  # fan_in_fan_out (Conv1D) or an embedding LoRA
    embedding: bool = False

    @property
    def rank(self) -> int:
        return self.shape_a[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the base tensor this module updates."""
        out_in = (self.shape_b[0], self.shape_a[1])
        return out_in[::-1] if self.transpose else out_in


@dataclass
class Adapter:
    """A PEFT LoRA adapter folder, read lazily (headers now, factors when needed)."""

    path: str  # absolute folder
    label: str
    config: dict[str, Any]
    modules: dict[str, LoraModule] = field(default_factory=dict)  # base tensor -> module

    @property
    def id(self) -> str:
        """The adapter's entry in FWPlan.models."""
        return ADAPTER_PREFIX + self.path

    @property
    def base_name(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def weights(self) -> str:
        return os.path.join(self.path, WEIGHTS_FILE)

    def factors(
        self, module: LoraModule, device: torch.device | str, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A [r, in] and B [out, r] of one module, on `device` in `dtype`."""
        from safetensors import safe_open

        with safe_open(self.weights, framework="pt", device="cpu") as handle:
            a = handle.get_tensor(module.key_a)
            b = handle.get_tensor(module.key_b)
        return a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


def _alpha_for(config: dict[str, Any], module: str) -> float:
    """The module's alpha as the installed PEFT resolves alpha_pattern when it loads the
    adapter (LoraModel: `get_pattern_key`, then the pattern's value or lora_alpha), so the
    factor pool scales each module as mergekit's densified `base+adapter` does."""
    patterns = config.get("alpha_pattern") or {}
    if patterns:
        from peft.utils.other import get_pattern_key  # peft is imported only when needed

        key = get_pattern_key(list(patterns), module)
        if key in patterns:
            return float(patterns[key])
    return float(config.get("lora_alpha", 8))


def read_adapter(path: str, label: str | None = None) -> Adapter:
    """Parse one adapter folder: config and safetensors header; rejects non-LoRA updates."""
    path = os.path.abspath(path)
    where = f"Adapter {path}"
    if not os.path.isdir(path):
        raise FWConfigError(f"{where}: no such folder (listed in parameters.adapters).")
    config_file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_file):
        raise FWConfigError(f"{where} has no {CONFIG_FILE}; is it a PEFT adapter folder?")
    try:
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except ValueError as error:
        raise FWConfigError(f"{where}: {CONFIG_FILE} is not valid JSON ({error}).") from None
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise FWConfigError(
            f"{where} is a {peft_type or 'non-LoRA'} adapter; only LoRA adapters "
            "(peft_type LORA, vertex W0 + s B A) can be FW candidates."
        )
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise FWConfigError(
                f"{where} uses {what}, which is not a plain LoRA update W0 + s B A; it cannot "
                "be a factor-scored FW vertex. Merge it into the base first (mergekit's "
                "`base+adapter` syntax, or PEFT merge_and_unload) and list the result under `models:`."
            )
    if config.get("bias", "none") != "none":
        raise FWConfigError(
            f"{where} trains biases (bias: {config['bias']}); only bias: none adapters are "
            "supported as vertices (merge it into the base first and list the result under `models:`)."
        )
    if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        names = ", ".join(sorted(os.listdir(path)))
        raise FWConfigError(
            f"{where} has no {WEIGHTS_FILE} (found: {names}); re-save it with "
            "save_pretrained(..., safe_serialization=True)."
        )
    weights = os.path.join(path, WEIGHTS_FILE)
    if problem := safetensors_problem(weights):
        raise FWConfigError(f"{where}: {weights} {problem}. {FIX}")
    shapes = safetensors_header.read(weights).shapes()
    pairs: dict[str, dict[str, str]] = {}
    embedding: set[str] = set()
    for key in shapes:
        stripped = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        match = _LINEAR_KEY.match(stripped)
        kind = match and match["kind"][-1]
        if not match:
            match = _EMBEDDING_KEY.match(stripped)
            kind = match and match["kind"]
            if match:
                embedding.add(match["module"])
        if not match:
            raise FWConfigError(
                f"{where}: tensor {key} is not a LoRA factor (lora_A / lora_B); adapters with "
                "other trained tensors (modules_to_save, biases, ...) cannot be FW vertices."
            )
        pairs.setdefault(match["module"], {})[kind] = key
    if not pairs:
        raise FWConfigError(f"{where}: {WEIGHTS_FILE} holds no LoRA factors.")
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    rslora = bool(config.get("use_rslora", False))
    adapter = Adapter(path=path, label=label or os.path.basename(path), config=config)
    for module, keys in sorted(pairs.items()):
        if set(keys) != {"A", "B"}:
            raise FWConfigError(f"{where}: module {module} has lora_{next(iter(keys))} only.")
        shape_a, shape_b = shapes[keys["A"]], shapes[keys["B"]]
        if len(shape_a) != 2 or len(shape_b) != 2 or shape_a[0] != shape_b[1]:
            raise FWConfigError(
                f"{where}: module {module} has factors A {list(shape_a)} and B {list(shape_b)}; "
                "only LoRA on linear and embedding layers (A [r, in], B [out, r]) is supported."
            )
        rank = shape_a[0]
        alpha = _alpha_for(config, module)
        is_embedding = module in embedding
        adapter.modules[f"{module}.weight"] = LoraModule(
            module=module,
            tensor=f"{module}.weight",
            key_a=keys["A"],
            key_b=keys["B"],
            shape_a=shape_a,
            shape_b=shape_b,
            scale=alpha / math.sqrt(rank) if rslora else alpha / rank,
            transpose=is_embedding or fan_in_fan_out,
            embedding=is_embedding,
        )
    return adapter


_cache_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def _cached_adapter(path: str, stamp: tuple) -> Adapter:
    return read_adapter(path)


def _stamp(path: str) -> tuple:
    files = (os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE))
    return tuple(os.stat(f).st_mtime_ns if os.path.exists(f) else 0 for f in files)


def adapter_from_id(vertex_id: str, path: str | None = None) -> Adapter:
    """The adapter of a plan entry (`adapter:<folder>`), parsed once per process and version."""
    path = os.path.abspath(path or vertex_id[len(ADAPTER_PREFIX) :])
    with _cache_lock:
        return _cached_adapter(path, _stamp(path))


# -- the recipe side: manifest and checks -------------------------------------------------
def read_manifest(manifest: str) -> list[tuple[str, str | None]]:
    """[(folder, name)] from `adapters: [{path, name}, ...]`; paths relative to the manifest."""
    import yaml

    where = f"parameters.adapters ({manifest})"
    if not os.path.isfile(manifest):
        raise FWConfigError(
            f"{where}: no such file (resolved from {os.getcwd()}). It names a YAML manifest "
            "like `adapters: [{path: ./lora_a}, {path: ./lora_b, name: b}]`."
        )
    try:
        data = yaml.safe_load(Path(manifest).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FWConfigError(f"{where} is not valid YAML: {error}") from None
    entries = data.get("adapters") if isinstance(data, dict) else data
    if isinstance(data, dict) and set(data) - {"adapters"}:
        raise FWConfigError(
            f"{where}: unknown keys {sorted(set(data) - {'adapters'})}; only `adapters:`."
        )
    if not isinstance(entries, list) or not entries:
        raise FWConfigError(f"{where} must hold a non-empty list `adapters: [{{path: ...}}, ...]`.")
    folder = os.path.dirname(os.path.abspath(manifest))
    out: list[tuple[str, str | None]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise FWConfigError(f"{where}: adapters[{i}] needs a `path:` (got {entry!r}).")
        unknown = set(entry) - {"path", "name"}
        if unknown:
            raise FWConfigError(
                f"{where}: adapters[{i}] has unknown keys {sorted(unknown)} (path, name)."
            )
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            name = str(name)
        path = os.path.normpath(os.path.join(folder, os.path.expanduser(entry["path"])))
        if path in [p for p, _ in out]:
            raise FWConfigError(f"{where}: adapter {path} is listed twice.")
        out.append((path, name))
    return out
