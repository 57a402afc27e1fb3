"""The re-routing zoo's language-model pieces: character tokenizer, LLaMA-style model, sample
encoding, summed losses and greedy exact match (computed exactly by teacher forcing)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
IGNORE = -100


def train_tokenizer(corpus: list[str], path: Path | None = None):
    """Character-level tokenizer trained with `tokenizers` (BPE with no merges), HF format."""
    from tokenizers import Tokenizer, models, processors, trainers
    from transformers import PreTrainedTokenizerFast

    counts: dict[str, int] = {}
    for text in corpus:
        for c in text:
            counts[c] = counts.get(c, 0) + 1
    alphabet = sorted(c for c, n in counts.items() if n >= 5)
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIALS) + len(alphabet),
        special_tokens=SPECIALS,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    bos = core.token_to_id("<s>")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    )  # fmt: skip
    if path is not None:
        tok.save_pretrained(str(path))
    return tok


def make_model(vocab: int, seed: int, hidden: int = 128, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def encode(record: dict, tok) -> tuple[list[int], list[int], int]:
    """Same masking as mergekit_fw.data.calibration.encode_record; also returns the byte count."""
    if "text" in record:
        ids = tok(record["text"])["input_ids"]
        return ids, list(ids), len(record["text"].encode("utf-8"))
    prompt = tok(record["prompt"])["input_ids"]
    response = tok(record["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + response, [IGNORE] * len(prompt) + response, len(record["response"])


class Encoded:
    """A task split, tokenized once and padded into fixed batches."""

    def __init__(self, task: str, records: list[dict], tok, batch: int = 100):
        self.task = task
        rows = [encode(r, tok) for r in records]
        self.bytes = sum(r[2] for r in rows)
        self.batches = []
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            width = max(len(r[0]) for r in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, (x, y, _) in enumerate(chunk):
                ids[i, : len(x)] = torch.tensor(x)
                labels[i, : len(y)] = torch.tensor(y)
                mask[i, : len(x)] = 1
            self.batches.append((ids, mask, labels))
        self.targets = sum(int((b[2][:, 1:] != IGNORE).sum()) for b in self.batches)


def train_batches(rows, batch: int, steps: int, seed: int):
    """`steps` random right-padded (ids, mask, labels) batches of (input, label) rows, seeded."""
    rng = random.Random(seed)
    for _ in range(steps):
        chunk = [rows[rng.randrange(len(rows))] for _ in range(batch)]
        width = max(len(r[0]) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, (x, y) in enumerate(chunk):
            ids[i, : len(x)] = torch.tensor(x)
            labels[i, : len(y)] = torch.tensor(y)
            mask[i, : len(x)] = 1
        yield ids, mask, labels


def _forward(model, ids, mask, labels):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    return logits, target


def loss_sum(model, enc: Encoded, grad: bool = False) -> torch.Tensor | float:
    """Summed response/text-token cross-entropy (nats)."""
    total = 0.0
    with torch.set_grad_enabled(grad):
        for ids, mask, labels in enc.batches:
            logits, target = _forward(model, ids, mask, labels)
            part = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                ignore_index=IGNORE, reduction="sum",
            )  # fmt: skip
            total = total + part
    return total


@torch.no_grad()
def exact_match(model, enc: Encoded) -> float:
    """Greedy-decoding exact match, computed exactly by teacher forcing: greedy decoding
    reproduces the response and stops iff the argmax at every response position (and at
    EOS) equals the target given the correct prefix. One forward pass, no generate loop."""
    right = total = 0
    for ids, mask, labels in enc.batches:
        logits, target = _forward(model, ids, mask, labels)
        ok = (logits.argmax(-1) == target) | (target == IGNORE)
        right += int(ok.all(dim=1).sum())
        total += ids.shape[0]
    return right / total


def calib_loss(model, encs: list[Encoded]) -> float:
    """Mean over tasks of the per-token loss: the objective FW minimises (equal task weights)."""
    return sum(float(loss_sum(model, e)) / e.targets for e in encs) / len(encs)
