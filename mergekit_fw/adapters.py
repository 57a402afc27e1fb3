"""PEFT LoRA adapters as Frank-Wolfe vertices, without dense copies (issue 4).

An adapter `a` of the base W0 is the vertex v_a = W0 + s_a B_a A_a on every tensor it
targets and v_a = W0 on every other tensor, with s_a = alpha / r (alpha / sqrt(r) for
rsLoRA). Nothing here forms a dense per-adapter model, on disk or in memory:

- LMO scores come from the factors: <G, v_a> = <G, W0> + s <B^T G, A> and
  ||v_a||^2 = ||W0||^2 + 2 s <B^T W0, A> + s^2 <B^T B, A A^T>. The base terms are those of
  the base vertex, which the pool reads anyway (`VertexPool.score_tensor`), so a tensor that no
  adapter targets costs nothing per adapter.
- The pre-pass forms W0 + s B A for one tensor at a time only where it must: the direction
  d = s - theta of a tensor an adapter won, and the task-arithmetic start.
- The write phase forms (c_0 + sum_a c_a) W0 + sum_dense c_k W_k + sum_a c_a s_a B_a A_a;
  the last sum is added one adapter at a time, in place (`streaming.combine`).

Adapters never go through mergekit's LoaderCache (that is what densifies `base+adapter`
references); their safetensors are read here, one factor at a time.

`lora_mode: factors` is the authors' generative variant instead (fw_reference.md §2, G-hard):
theta is a set of LoRA factors on the frozen base, the vertices of each factor tensor are the
adapters' own A or B (vertex 0, the base, is the zero factor), and the output is a PEFT LoRA
adapter. Its Delta W = s B_theta A_theta has cross terms B_i A_j: it is not a convex
combination of the adapters' weight updates.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergekit_fw.config import FWConfigError

LOG = logging.getLogger("mergekit_fw")

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

    def add_delta_(self, out: torch.Tensor, name: str, alpha: float = 1.0) -> torch.Tensor:
        """out += alpha * s * B A (oriented like the base tensor), in place, no dense temporary."""
        module = self.modules.get(name)
        if module is None or alpha == 0.0:
            return out
        a, b = self.factors(module, out.device, out.dtype)
        target = out.t() if module.transpose else out
        target.addmm_(b, a, alpha=alpha * module.scale)
        return out

    # -- scores from factors (G and W0 oriented as B @ A, in float32 or float64) --
    def _inner(self, module: LoraModule, x: torch.Tensor):
        """(A, B, <X, B A> = <B^T X, A>) with X oriented like B @ A; factors in x's dtype."""
        a, b = self.factors(module, x.device, x.dtype)
        x = x.t() if module.transpose else x
        return a, b, torch.sum((b.t() @ x) * a, dtype=torch.float64)

    def dot(self, name: str, g: torch.Tensor, base_dot: torch.Tensor) -> torch.Tensor:
        """<G, W0 + s B A> = <G, W0> + s <B^T G, A>."""
        module = self.modules.get(name)
        if module is None:
            return base_dot
        return base_dot + module.scale * self._inner(module, g)[2]

    def norm_sq(self, name: str, w0: torch.Tensor, base_sq: torch.Tensor) -> torch.Tensor:
        """||W0 + s B A||^2 = ||W0||^2 + 2 s <B^T W0, A> + s^2 <B^T B, A A^T>."""
        module = self.modules.get(name)
        if module is None:
            return base_sq
        a, b, cross = self._inner(module, w0)
        a64, b64 = a.double(), b.double()
        gram = torch.sum((b64.t() @ b64) * (a64 @ a64.t()))
        s = module.scale
        return base_sq + 2.0 * s * cross + s * s * gram


def _alpha_for(config: dict[str, Any], module: str) -> float:
    """PEFT's alpha_pattern lookup (peft.utils.other.get_pattern_key)."""
    for key, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return float(value)
    return float(config.get("lora_alpha", 8))


def read_adapter(path: str, label: str | None = None) -> Adapter:
    """Parse one adapter folder: config and safetensors header; rejects non-LoRA updates."""
    from safetensors import safe_open

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
    shapes: dict[str, tuple[int, ...]] = {}
    with safe_open(os.path.join(path, WEIGHTS_FILE), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            shapes[key] = tuple(handle.get_slice(key).get_shape())
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


def _same_base(named: str | None, base_path: str) -> bool:
    if not named:
        return True  # the adapter does not say
    if os.path.exists(named) and os.path.exists(base_path):
        return os.path.samefile(named, base_path)
    norm = [p.rstrip("/\\") for p in (named, base_path)]
    return norm[0] == norm[1] or os.path.basename(norm[0]) == os.path.basename(norm[1])


def check_against_base(base, adapters: Sequence[Adapter]) -> None:
    """Every targeted module must exist in the base with the shape the factors imply."""
    from mergekit_fw.validate import tensor_shapes

    if base.lora:
        raise FWConfigError(
            "parameters.adapters needs a plain base_model, not a `base+adapter` reference."
        )
    shapes = tensor_shapes(base.model.path) if os.path.isdir(base.model.path) else {}
    for adapter in adapters:
        other = not _same_base(adapter.base_name, base.model.path)
        named = f"; its {CONFIG_FILE} names base_model_name_or_path {adapter.base_name!r}"
        for name, module in adapter.modules.items():
            if shapes and name not in shapes:
                targets = adapter.config.get("target_modules")
                raise FWConfigError(
                    f"Adapter {adapter.path} targets {module.module}, which the base "
                    f"{base.model.path} does not have (no tensor {name}; target_modules: "
                    f"{targets}){named if other else ''}. Adapters must be LoRAs of the recipe's "
                    "base_model."
                )
            if shapes and tuple(shapes[name]) != module.shape:
                raise FWConfigError(
                    f"Adapter {adapter.path} is not an adapter of the base {base.model.path}"
                    f"{named if other else ''}: {module.module} is {list(module.shape)} in the "
                    f"adapter (B {list(module.shape_b)} x A {list(module.shape_a)}) and "
                    f"{list(shapes[name])} in the base. Adapters must be LoRAs of the recipe's "
                    "base_model."
                )
        if other:
            LOG.warning(
                "Adapter %s names base_model_name_or_path %r, the recipe's base is %s; its "
                "shapes match, so it is used as an adapter of the recipe's base.",
                adapter.path, adapter.base_name, base.model.path,
            )  # fmt: skip


def load_adapters(settings, base, candidates: Sequence) -> list[Adapter]:
    """The recipe's adapter vertices (`parameters.adapters`), checked; [] when unset.

    Also the pool-level rules: at least one candidate in total, and what lora_mode: factors
    needs.
    """
    adapters: list[Adapter] = []
    manifest = getattr(settings, "adapters", None)
    if manifest:
        entries = read_manifest(manifest)
        adapters = [read_adapter(path, name) for path, name in entries]
        labels = [a.label for a in adapters]
        for label in labels:
            if labels.count(label) > 1:
                raise FWConfigError(
                    f"parameters.adapters ({manifest}): two adapters are named {label!r}; give "
                    "them distinct `name:`s."
                )
        check_against_base(base, adapters)
    if not candidates and not adapters:
        raise FWConfigError(
            "frank_wolfe needs at least one candidate: a model under `models:` besides the "
            "base, or LoRA adapters in a manifest named by parameters.adapters."
        )
    if getattr(settings, "lora_mode", "weights") == "factors":
        if not adapters:
            raise FWConfigError(
                "lora_mode: factors merges LoRA adapters; list them in a manifest named by "
                "parameters.adapters."
            )
        if candidates:
            raise FWConfigError(
                "lora_mode: factors combines the adapters' A and B factors and writes a LoRA "
                f"adapter; dense candidates under `models:` ({', '.join(map(str, candidates))}) "
                "have no factors. List only the base under `models:`, or use lora_mode: weights."
            )
        if settings.init != "task_arithmetic":
            raise FWConfigError(
                "lora_mode: factors needs init: task_arithmetic (the authors' 0.3 * sum of the "
                "factors): at zero factors (init: base) the gradient of every factor is zero."
            )
        if getattr(settings, "variant", "hard") != "hard":
            raise FWConfigError("lora_mode: factors supports variant: hard only.")
        flags = {bool(a.config.get("fan_in_fan_out", False)) for a in adapters}
        if len(flags) > 1:
            raise FWConfigError("lora_mode: factors needs adapters that agree on fan_in_fan_out.")
    return adapters


def unique_labels(existing: Sequence[str], wanted: Sequence[str]) -> list[str]:
    taken, out = list(existing), []
    for base in wanted:
        label, i = base, 2
        while label in taken:
            label, i = f"{base}#{i}", i + 1
        taken.append(label)
        out.append(label)
    return out


# -- the mergekit kernel (lora_mode: weights) ---------------------------------------------
# -- lora_mode: factors (the authors' G-hard) ---------------------------------------------
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

    from mergekit_fw.frank_wolfe import Slot
    from mergekit_fw.vertices import short_labels

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


def _target_modules(modules: Sequence[str], base_path: str) -> list[str]:
    """Module suffixes (q_proj, ...) when they cover exactly these modules, else full names."""
    from mergekit_fw.validate import tensor_shapes

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
