"""A built-in tiny expert zoo for the demo and the tests: no downloads, seconds on a CPU.

A character-level tokenizer, a LLaMA-style base trained briefly on a mix of synthetic string
tasks, and experts fine-tuned from it on one task each. Everything is seeded.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

import torch

ALPHABET = string.ascii_lowercase + string.digits + " :|+=>.,-"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}|{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)


def build_tokenizer(path: str | Path | None = None):
    """Character-level fast tokenizer with BOS/EOS/PAD and a tiny chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(ALPHABET))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if path is not None:
        tokenizer.save_pretrained(str(path))
    return tokenizer


def make_model(seed: int = 0, hidden: int = 32, layers: int = 2, vocab: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab or len(SPECIALS) + len(ALPHABET),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


# --- synthetic tasks: each maps an RNG to one "prompt>answer" string ---------------------
def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase[:12]) for _ in range(n))


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "reverse": lambda r: ((w := _word(r, r.randint(3, 7))) + ">", w[::-1]),
    "sort": lambda r: ((w := _word(r, r.randint(3, 7))) + ">", "".join(sorted(w))),
    "add": lambda r: (f"{(a := r.randint(0, 49))}+{(b := r.randint(0, 49))}=", str(a + b)),
    "count": lambda r: ((w := _word(r, r.randint(1, 9))) + ":", str(len(w))),
    "upper": lambda r: (
        (w := _word(r, r.randint(3, 7))) + ">",
        w.translate(str.maketrans("abcdefghijkl", "mnopqrstuvwx")),
    ),
    "repeat": lambda r: ((w := _word(r, r.randint(2, 4))) + ">", w + w),
}


def task_records(task: str, n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(f"{task}-{seed}")
    return [dict(zip(("prompt", "response"), TASKS[task](rng))) for _ in range(n)]


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))


def train(
    model,
    tokenizer,
    records: list[dict[str, str]],
    steps: int,
    lr: float,
    seed: int = 0,
    batch: int = 16,
):
    """Plain AdamW on prompt+response text (loss on every token: it is pre-training-ish)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    texts = [r["prompt"] + r["response"] + tokenizer.eos_token for r in records]
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        chunk = [texts[rng.randrange(len(texts))] for _ in range(batch)]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return model


def save(model, tokenizer, path: str | Path) -> str:
    path = Path(path)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return str(path)


def build_zoo(
    root: str | Path,
    experts: list[str],
    base_steps: int = 300,
    expert_steps: int = 150,
    hidden: int = 32,
    layers: int = 2,
) -> dict[str, str]:
    """Base trained on all tasks, then one expert per task; returns name -> folder."""
    root = Path(root)
    tokenizer = build_tokenizer()
    base = make_model(seed=0, hidden=hidden, layers=layers)
    mix = [r for i, t in enumerate(TASKS) for r in task_records(t, 200, seed=100 + i)]
    train(base, tokenizer, mix, steps=base_steps, lr=3e-3, seed=0)
    paths = {"base": save(base, tokenizer, root / "base")}
    for i, task in enumerate(experts):
        expert = make_model(seed=0, hidden=hidden, layers=layers)
        expert.load_state_dict(base.state_dict())
        train(
            expert,
            tokenizer,
            task_records(task, 400, seed=i),
            steps=expert_steps,
            lr=3e-3,
            seed=1 + i,
        )
        paths[task] = save(expert, tokenizer, root / f"expert_{task}")
    return paths
