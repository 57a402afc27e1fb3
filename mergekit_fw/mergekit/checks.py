"""Recipe checks that run before any model is loaded or any gradient is taken.

mergekit validates syntax, but silently drops unknown keys and only finds shape problems
mid-merge. Everything here reads configs, tokenizers and safetensors headers only.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import yaml
from mergekit.common import ModelReference, dtype_from_name
from mergekit.config import MergeConfiguration

from mergekit_fw.data.calibration import CalibrationSet, load_calibration
from mergekit_fw.fw.objectives import NamedObjective, make_objective
from mergekit_fw.mergekit.start import start_config
from mergekit_fw.plan import ExcludedCandidate
from mergekit_fw.pool.integrity import FIX, safetensors_problem, weights_problems
from mergekit_fw.pool.lora_checks import load_adapters
from mergekit_fw.pool.lora_files import Adapter
from mergekit_fw.pool.reader import tensor_shapes
from mergekit_fw.settings import FWConfigError, FWSettings

LOG = logging.getLogger("mergekit_fw")

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

METHOD_NAME = "frank_wolfe"


@dataclass(frozen=True)
class Recipe:
    """A checked frank_wolfe recipe: its options and inputs, resolved before any gradient.

    A frozen value: the foreign screen returns a changed copy (`dataclasses.replace`); what
    the pre-pass computes (the plan, a mergekit start vertex) is returned, not stored here.
    """

    settings: FWSettings
    base: ModelReference
    candidates: tuple[ModelReference, ...]
    tokenizer: PreTrainedTokenizerBase | None  # None: checked without calibration data
    calibration: CalibrationSet | None
    objective: NamedObjective
    adapters: tuple[Adapter, ...] = ()  # LoRA adapter vertices (parameters.adapters)
    distances: dict[str, float] = field(default_factory=dict)  # foreign screen (foreign.py)
    excluded: tuple[ExcludedCandidate, ...] = ()  # candidates the screen left out


# dtypes the pre-pass can take gradients in and mergekit can write (mergekit.common.dtype_from_name)
DTYPES = ("bfloat16", "float16", "float32", "float64")


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML
    silently keeps the last value)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(
                    f"key '{key}' appears twice (lines {first} and "
                    f"{key_node.start_mark.line + 1}); YAML would silently keep only the last "
                    "value. Remove one of them."
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml_unique(text: str, where: str):
    """Parse recipe YAML like mergekit does, but refuse duplicated keys (FWConfigError)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as error:
        raise FWConfigError(f"{where}: {error}") from None


def check_source(text: str | None, where: str = "recipe") -> None:
    """What mergekit's parser drops without a word: a key given twice, and a top-level key
    that mergekit does not know (a typo such as `parameter:` or `dtpye:`)."""
    if not text:
        return
    try:
        document = load_yaml_unique(text, where)
    except yaml.YAMLError:
        return  # mergekit reports its own syntax errors
    if not isinstance(document, dict):
        return
    known = list(MergeConfiguration.model_fields)
    parameters = document.get("parameters")
    for key, value in (parameters or {}).items() if isinstance(parameters, dict) else ():
        if value is None:
            raise FWConfigError(
                f"{where}: parameters.{key} is empty (null), which mergekit refuses; leave "
                "the key out to get its default."
            )
    for key in document:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise FWConfigError(
                f"{where}: unknown top-level key '{key}' (mergekit would silently ignore "
                f"it).{hint} Top-level keys: {', '.join(known)}."
            )


def check_host_options(config: MergeConfiguration) -> None:
    """The top-level keys mergekit owns, checked as the run would use them, so that `check`
    rejects what the run would reject (mergekit only finds a bad dtype mid-run)."""
    for key in ("dtype", "out_dtype"):
        value = getattr(config, key)
        if value is None:
            continue
        try:
            dtype = dtype_from_name(value)
        except RuntimeError:
            dtype = None
        if dtype is None or not dtype.is_floating_point:
            close = difflib.get_close_matches(str(value), DTYPES, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise FWConfigError(
                f"{key}: {value!r} is not a dtype a frank_wolfe merge can use.{hint} Use one "
                f"of {', '.join(DTYPES)}."
            )
    template = config.chat_template
    if template and template != "auto" and not _named_template(template):
        if len(template) < 20 or "{" not in template:
            names = ", ".join(sorted(_template_names()))
            raise FWConfigError(
                f"chat_template: {template!r} is neither a template mergekit ships ({names}), "
                "nor 'auto', nor a Jinja template; mergekit would stop at the end of the merge."
            )


def _template_names() -> list[str]:
    import importlib.resources

    from mergekit._data import chat_templates

    files = importlib.resources.files(chat_templates).iterdir()
    return [f.name.removesuffix(".jinja") for f in files if f.name.endswith(".jinja")]


def _named_template(template: str) -> bool:
    return (
        len(template) < 256
        and "\n" not in template
        and "{" not in template
        and template in _template_names()
    )


def raw_parameters(config: MergeConfiguration) -> dict:
    return dict(config.parameters or {})


def _structure(config: MergeConfiguration) -> tuple[ModelReference, list[ModelReference]]:
    if config.merge_method != METHOD_NAME:
        raise FWConfigError(f"merge_method is {config.merge_method!r}, not {METHOD_NAME!r}.")
    if config.slices or config.modules or not config.models:
        raise FWConfigError(
            "frank_wolfe recipes list candidates under `models:`; `slices:` and `modules:` are "
            "not supported (FW chooses per tensor itself)."
        )
    if config.base_model is None:
        raise FWConfigError(
            "frank_wolfe needs `base_model:` (the pretrained model the candidates were "
            "fine-tuned from)."
        )
    if config.tokenizer is not None or config.tokenizer_source is not None:
        raise FWConfigError(
            "frank_wolfe does not support `tokenizer:`/`tokenizer_source:`: the pre-pass needs "
            "candidates that share the base's vocabulary. Remove the key, or align the "
            "vocabularies first (e.g. with mergekit-tokensurgeon)."
        )
    for model in config.models:
        if model.parameters:
            raise FWConfigError(
                f"models[{model.model}] has `parameters:`; frank_wolfe takes no per-model "
                "parameters (FW computes every coefficient). Put options under the top-level "
                "`parameters:`."
            )
    base = config.base_model
    candidates = [m.model for m in config.models if m.model != base]
    # "at least one candidate" counts LoRA adapters too: pool.lora_checks.load_adapters checks it
    return base, candidates


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.count("/") != 1 or os.sep == "\\"


def check_model_path(ref: ModelReference, role: str) -> None:
    """A local model folder must exist and hold a config and weights."""
    for path in [ref.model.path] + ([ref.lora.path] if ref.lora else []):
        if os.path.isdir(path):
            continue
        if os.path.exists(path) or _looks_local(path):
            raise FWConfigError(
                f"{role} {path}: no such model folder (resolved from {os.getcwd()}). "
                "Fix the path in the recipe; relative paths resolve from the working directory."
            )
    path = ref.model.path
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise FWConfigError(
                f"{role} {path} has no config.json; is it a transformers model folder?"
            )
        names = os.listdir(path)
        if not any(n.endswith((".safetensors", ".bin", ".safetensors.index.json")) for n in names):
            raise FWConfigError(f"{role} {path} holds no weights (*.safetensors or *.bin).")
        check_model_files(ref, role)


def check_model_files(ref: ModelReference, role: str) -> None:
    """Truncated or corrupt weight files, and shard indexes naming missing files, found from
    headers and sizes alone; one line naming the model's role, the model and the file."""
    problems = weights_problems(ref.model.path)
    if ref.lora and os.path.isdir(ref.lora.path):
        adapter_file = os.path.join(ref.lora.path, "adapter_model.safetensors")
        if os.path.isfile(adapter_file) and (problem := safetensors_problem(adapter_file)):
            problems.append((adapter_file, problem))
    if problems:
        file, problem = problems[0]
        more = (
            f" ({len(problems) - 1} more files of this model are broken too)"
            if len(problems) > 1
            else ""
        )
        raise FWConfigError(f"{role} {ref}: {file} {problem}{more}. {FIX}")


def check_compatible(base: ModelReference, candidates: list[ModelReference]) -> None:
    """Every candidate must have the base's tensors, shapes and vocabulary."""
    if not os.path.isdir(base.model.path) or base.lora:
        return  # hub models and adapters are checked by mergekit itself
    base_shapes = tensor_shapes(base.model.path)
    base_vocab = _vocab(base.model.path)
    for ref in candidates:
        if ref.lora or not os.path.isdir(ref.model.path):
            continue
        shapes = tensor_shapes(ref.model.path)
        for name, shape in base_shapes.items():
            if shapes and name not in shapes:
                raise FWConfigError(
                    f"model {ref} has no tensor {name}, which the base has; candidates must "
                    "be fine-tunes of the base with the same architecture."
                )
            if shapes and shapes[name] != shape:
                raise FWConfigError(
                    f"model {ref}: tensor {name} has shape {list(shapes[name])}, the base "
                    f"{list(shape)}. FW merges fine-tunes of one base; {_shape_hint(name, shapes[name], shape)}"
                )
        vocab = _vocab(ref.model.path)
        if base_vocab is not None and vocab is not None and vocab != base_vocab:
            diff = sorted(set(vocab.items()) ^ set(base_vocab.items()))[:3]
            raise FWConfigError(
                f"model {ref} has a different tokenizer vocabulary from the base (e.g. "
                f"{diff}); FW needs one shared vocabulary. Align it first (mergekit-tokensurgeon)."
            )


def _shape_hint(name: str, got: tuple, want: tuple) -> str:
    """Only the rows of an embedding or output head differ: a vocabulary to align; any
    other difference (hidden size, layers): another architecture, not a fine-tune."""
    vocab_tensor = any(part in name for part in ("embed", "lm_head", "wte", "word_embeddings"))
    if vocab_tensor and len(got) == len(want) and tuple(got[1:]) == tuple(want[1:]):
        return "a different vocabulary size needs aligning first (e.g. mergekit-tokensurgeon)."
    return (
        "this candidate has another architecture or size (e.g. hidden size), so it is not a "
        "fine-tune of this base; remove it from `models:`."
    )


def _vocab(path: str) -> dict[str, int] | None:
    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
        return None
    with open(file, encoding="utf-8") as handle:
        document = json.load(handle)
    vocab = document.get("model", {}).get("vocab")
    if isinstance(vocab, list):  # unigram: [[piece, score], ...]
        vocab = {piece[0]: i for i, piece in enumerate(vocab)}
    added = document.get("added_tokens", [])
    return {**(vocab or {}), **{t["content"]: t["id"] for t in added}}


def _from_base(auto_class: str, base: ModelReference, trust_remote_code: bool, hint: str):
    """AutoTokenizer/AutoConfig of the base, with an error that says what to fix."""
    import transformers

    _hub_reachable(base)
    try:
        return getattr(transformers, auto_class).from_pretrained(
            base.model.path, revision=base.model.revision, trust_remote_code=trust_remote_code
        )
    except Exception as error:
        raise FWConfigError(
            f"Could not load {auto_class} from {base.model.path}: {error}. {hint}"
        ) from None


def _hub_reachable(ref: ModelReference) -> None:
    """A hub id that is neither a local folder nor in the Hugging Face cache needs the hub:
    without a network, fail in one line now instead of after transformers' retries (about
    half a minute)."""
    path = ref.model.path
    if os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        return  # a local folder; offline mode fails fast by itself
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(
            try_to_load_from_cache(path, "config.json", revision=ref.model.revision), str
        ):
            return
    except Exception:  # not a valid repo id: transformers says what is wrong
        return
    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise FWConfigError(
            f"base_model {path} is not a local folder and not in the Hugging Face cache, and "
            f"{host} cannot be reached ({error}). Download it first (huggingface-cli download "
            f"{path} --local-dir DIR) and put DIR in the recipe, or run where the hub is reachable."
        ) from None


def load_tokenizer(base: ModelReference, trust_remote_code: bool = False):
    return _from_base(
        "AutoTokenizer", base, trust_remote_code,
        "The calibration data is tokenized with the base model's tokenizer; copy its files into the base folder.",
    )  # fmt: skip


def load_base_config(base: ModelReference, trust_remote_code: bool = False):
    return _from_base(
        "AutoConfig", base, trust_remote_code, "Is the base a transformers model folder?"
    )


def check_recipe(
    config: MergeConfiguration, trust_remote_code: bool = False, with_calibration: bool = True
) -> Recipe:
    """All recipe problems, in the order a user would want to fix them."""
    base, candidates = _structure(config)
    check_host_options(config)
    settings = FWSettings.from_parameters(raw_parameters(config))
    for line in settings.unused():
        LOG.warning("frank_wolfe: %s", line)
    check_model_path(base, "base_model")
    for ref in candidates:
        check_model_path(ref, "model")
    check_compatible(base, candidates)
    adapters = tuple(load_adapters(settings, base, candidates))  # () without parameters.adapters
    start_config(settings, base, candidates, config.dtype)  # a mergekit start's recipe, checked
    base_config = load_base_config(base, trust_remote_code)
    objective = make_objective(settings.objective, getattr(base_config, "architectures", None))
    checked = Recipe(settings, base, tuple(candidates), None, None, objective, adapters)
    if not with_calibration:
        return checked
    tokenizer = load_tokenizer(base, trust_remote_code)
    sequence = objective.sequence_level
    calibration = load_calibration(
        settings.calibration,
        tokenizer,
        settings.max_length,
        num_labels=base_config.num_labels if sequence and objective.needs_labels else None,
        sequence=sequence,
    )
    if settings.variant == "soft" and settings.select == "per_task" and len(calibration.tasks) < 2:
        raise FWConfigError(
            "`select: per_task` picks one vertex per calibration task, and the calibration "
            f"{settings.calibration} has one task; use a manifest with several tasks, or "
            "`select: topk`."
        )
    return dataclasses.replace(checked, tokenizer=tokenizer, calibration=calibration)
