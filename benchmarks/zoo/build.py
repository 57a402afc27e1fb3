"""Build (or load from cache) the re-routing zoo: `python -m benchmarks.run --only zoo`.

- tokenizer: character level (`tokenizers`) plus 32 tag tokens (16 aliases, 16 new tags);
- base: LLaMA-style, ~0.68M parameters, pretrained on all 16 tasks under their alias tags
  (the new tag rows, never trained, then set to the mean alias row: `mean_new_tags`);
- 16 experts, one per task, fine-tuned from the base to answer under the task's new tag
  (body learning rate `expert_lr`, the new tag's embedding row at `tag_lr`);
- foreign base: a second initialisation (seed 1) pretrained the same way for fewer steps,
  and 2 foreign experts (FOREIGN_TASKS) fine-tuned from it;
- held-out exact match of the base and every expert on every task (zoo.json).
Deterministic: one thread per process, seeded; experts train in ZOO_JOBS processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import torch

from benchmarks.common import CACHE, ROOT, threads
from benchmarks.zoo.lm import Encoded, encode, exact_match, make_model, train_batches
from benchmarks.zoo.lm import train_tokenizer as char_tokenizer
from benchmarks.zoo.tasks import (
    ALL_TASKS,
    FOREIGN_TASKS,
    alias_tag,
    corpus,
    new_tag,
    record,
    tags,
    words,
)

ZOO = CACHE / "rzoo"
SETTINGS = {
    "version": 7, "hidden": 128, "layers": 4, "base_steps": 4000, "base_batch": 64,
    "base_lr": 3e-3, "foreign_base_steps": 800, "expert_steps": 150, "expert_batch": 32,
    "expert_lr": 2e-4, "tag_lr": 1e-2, "foreign_expert_lr": 1e-3, "new_tag_init": "mean",
}  # fmt: skip
# experiments: ZOO_SETTINGS='{"expert_lr": 0.001}' overrides entries (and the fingerprint)
SETTINGS.update(json.loads(os.environ.get("ZOO_SETTINGS") or "{}"))


def fingerprint() -> str:
    return hashlib.sha1(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:10]


def tokenizer():
    tok = char_tokenizer(corpus())
    tok.add_special_tokens({"additional_special_tokens": tags()})
    return tok


def train(model, rows, steps, batch, lr, seed, fast_rows=None, mult=1.0) -> float:
    """AdamW (no weight decay), linear decay to 10%, loss on response tokens only.

    fast_rows: embedding rows whose Adam update is scaled by `mult` (per-element learning
    rate: Adam is invariant to gradient scale, so the step itself is scaled)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - 0.9 * s / max(steps, 1))
    emb = model.get_input_embeddings().weight
    model.train()
    last = float("nan")
    for ids, mask, labels in train_batches(rows, batch, steps, seed):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        before = emb.detach()[fast_rows].clone() if fast_rows is not None else None
        opt.step()
        sched.step()
        if before is not None:
            with torch.no_grad():
                emb[fast_rows] = before + mult * (emb[fast_rows] - before)
        last = float(loss.detach())
    model.eval()
    return last


def mean_new_tags(model, tok) -> None:
    """New tag rows start at the mean alias row, as a tokenizer extension initialises added
    tokens (transformers' mean resizing): the base never trained them, and from their random
    rows one expert of zoo version 7 (rotate) stuck at loss 1.95, own-task exact match 0.16."""
    emb = model.get_input_embeddings().weight
    aliases = tok.convert_tokens_to_ids([alias_tag(t) for t in ALL_TASKS])
    with torch.no_grad():
        emb[tok.convert_tokens_to_ids([new_tag(t) for t in ALL_TASKS])] = emb[aliases].mean(0)


def load_zoo() -> dict:
    return json.loads((ZOO / "zoo.json").read_text())


def _jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def experts() -> list[tuple[str, str, str]]:
    """(task, base name, model name) for every expert, same-base first."""
    out = [(t, "base", f"expert_{t}") for t in ALL_TASKS]
    return out + [(t, "foreign_base", f"foreign_{t}") for t in FOREIGN_TASKS]


def build(force: bool = False) -> dict:
    """Tokenizer, both bases, the experts (ZOO_JOBS processes, default 2), then scores."""
    threads()
    started = time.perf_counter()
    jobs = int(os.environ.get("ZOO_JOBS", "2"))
    shard = os.environ.get("ZOO_SHARD")  # "i/k": build only every k-th model of the stage
    marker = ZOO / "zoo.json"
    if marker.exists() and not force and not shard:
        info = json.loads(marker.read_text())
        if info.get("fingerprint") == fingerprint():
            print(f"zoo: cached at {ZOO} (built in {info['seconds']:.0f}s)")
            return info
    ZOO.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    split = {t: words(t) for t in ALL_TASKS}
    for t in ALL_TASKS:  # the calibration / test files (merge methods read calibration only)
        folder = ZOO / "data" / t
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("calibration", "test"):
            _jsonl(folder / f"{name}.jsonl", [record(t, w) for w in split[t][name]])
    alias_rows = [encode(record(t, w, alias=True), tok)[:2]
                  for t in ALL_TASKS for w in split[t]["train"]]  # fmt: skip
    timings: dict[str, float] = {}

    def cached(name, stamp):
        """Models are cached one at a time: an interrupted build resumes."""
        file = ZOO / name / "stage.json"
        if file.exists() and json.loads(file.read_text())["stamp"] == stamp:
            timings[name] = json.loads(file.read_text())["seconds"]
            return str(ZOO / name)
        return None

    def save(model, name, stamp, seconds):
        path = ZOO / name
        model.save_pretrained(str(path), safe_serialization=True)
        tok.save_pretrained(str(path))
        (path / "stage.json").write_text(json.dumps({"stamp": stamp, "seconds": seconds}))
        timings[name] = seconds
        return str(path)

    def shard_of(items):
        if not shard:
            return items
        i, k = (int(x) for x in shard.split("/"))
        return [x for j, x in enumerate(items) if j % k == i]

    def spawn():  # one process per shard; each caches what it builds
        children = [
            subprocess.Popen([sys.executable, "-m", "benchmarks.zoo.build"], cwd=str(ROOT.parent),
                             env=dict(os.environ, ZOO_SHARD=f"{i}/{jobs}", ZOO_STAGE=stage))
            for i in range(jobs)
        ]  # fmt: skip
        if any(child.wait() for child in children):
            raise RuntimeError("zoo: a shard failed (see its output above)")

    vocab = len(tok)
    base_keys = ("hidden", "layers", "base_batch", "base_lr", "new_tag_init")
    bases = [("base", 0, SETTINGS["base_steps"]), ("foreign_base", 1,
             SETTINGS["foreign_base_steps"])]  # fmt: skip
    stages = {"bases": bases, "experts": experts()}
    paths: dict[str, str] = {}
    for stage in ("bases", "experts"):
        if os.environ.get("ZOO_STAGE", stage) != stage:
            continue
        if not shard and jobs > 1:
            spawn()
        only = os.environ.get("ZOO_ONLY")  # comma list of model names (rebuild a few)
        for item in shard_of(stages[stage]):
            if only and (item[0] if stage == "bases" else item[2]) not in only.split(","):
                continue
            if stage == "bases":
                name, seed, steps = item
                stamp = [SETTINGS[k] for k in base_keys] + [steps, seed, vocab]
            else:
                task, base_name, name = item
                seed = 100 + ALL_TASKS.index(task) + (50 if base_name != "base" else 0)
                keys = ("expert_steps", "expert_batch", "expert_lr", "tag_lr",
                        "foreign_expert_lr")  # fmt: skip
                stamp = [SETTINGS[k] for k in keys] + [task, base_name, seed]
                stamp.append(json.loads((ZOO / base_name / "stage.json").read_text())["stamp"])
            if (path := cached(name, stamp)) is not None:
                paths[name] = path
                continue
            t0 = time.perf_counter()
            model = make_model(vocab, seed, SETTINGS["hidden"], SETTINGS["layers"])
            if stage == "bases":
                loss = train(model, alias_rows, steps, SETTINGS["base_batch"],
                             SETTINGS["base_lr"], seed)  # fmt: skip
                if SETTINGS["new_tag_init"] == "mean":  # else: left at their random rows
                    mean_new_tags(model, tok)
            else:
                model.load_state_dict(type(model).from_pretrained(ZOO / base_name).state_dict())
                rows = [encode(record(task, w), tok)[:2] for w in split[task]["train"]]
                foreign = base_name != "base"
                loss = train(
                    model, rows, SETTINGS["expert_steps"], SETTINGS["expert_batch"],
                    SETTINGS["foreign_expert_lr" if foreign else "expert_lr"], seed,
                    fast_rows=[tok.convert_tokens_to_ids(new_tag(task))],
                    mult=SETTINGS["tag_lr"] / SETTINGS["foreign_expert_lr" if foreign else "expert_lr"],
                )  # fmt: skip
            paths[name] = save(model, name, stamp, time.perf_counter() - t0)
            print(f"zoo: {name} loss {loss:.4f} in {timings[name]:.0f}s", flush=True)
    if shard:
        return {}
    names = ["base", "foreign_base"] + [e[2] for e in experts()]
    paths = {n: str(ZOO / n) for n in names}
    for n in names:
        timings.setdefault(n, json.loads((ZOO / n / "stage.json").read_text())["seconds"])
    from transformers import LlamaForCausalLM

    tests = {t: Encoded(t, [record(t, w) for w in split[t]["test"]], tok) for t in ALL_TASKS}
    scores = {}
    for n in names:
        model = LlamaForCausalLM.from_pretrained(paths[n]).eval()
        scores[n] = {t: exact_match(model, tests[t]) for t in ALL_TASKS}
    aliases = {t: Encoded(t, [record(t, w, alias=True) for w in split[t]["test"]], tok)
               for t in ALL_TASKS}  # fmt: skip
    alias_scores = {n: {t: exact_match(LlamaForCausalLM.from_pretrained(paths[n]).eval(), e)
                        for t, e in aliases.items()} for n in ("base", "foreign_base")}  # fmt: skip
    distance = _distances(paths)
    info = {
        "fingerprint": fingerprint(), "settings": SETTINGS, "paths": paths, "vocab": vocab,
        "params": sum(p.numel() for p in model.parameters()), "scores": scores,
        "alias_scores": alias_scores,
        "distance": distance, "timings": timings, "train_seconds": sum(timings.values()),
        "seconds": time.perf_counter() - started, "jobs": jobs,
    }  # fmt: skip
    marker.write_text(json.dumps(info, indent=1))
    print(f"zoo: built in {info['seconds']:.0f}s ({info['params']} parameters per model)")
    return info


def _distances(paths) -> dict[str, float]:
    """||theta - base|| / ||base|| over the whole model (what the foreign screen measures)."""
    from safetensors.torch import load_file

    base = load_file(f"{paths['base']}/model.safetensors")
    norm = sum(float(v.float().pow(2).sum()) for v in base.values()) ** 0.5
    out = {}
    for n, p in paths.items():
        sd = load_file(f"{p}/model.safetensors")
        out[n] = sum(float((sd[k] - base[k]).float().pow(2).sum()) for k in base) ** 0.5 / norm
    return out


def expert_table(info: dict) -> str:
    """Markdown: base vs own expert (and foreign expert) on each task's held-out split."""
    s = info["scores"]
    lines = ["| task | base | own expert | foreign expert | best other expert | distance from base |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for t in ALL_TASKS:
        other = max(s[f"expert_{u}"][t] for u in ALL_TASKS if u != t)
        foreign = s.get(f"foreign_{t}", {}).get(t)
        lines.append(
            f"| {t} | {s['base'][t]:.2f} | {s[f'expert_{t}'][t]:.2f} | "
            f"{'' if foreign is None else f'{foreign:.2f}'} | {other:.2f} | "
            f"{info['distance'][f'expert_{t}']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    build()
    if not os.environ.get("ZOO_SHARD"):
        info = load_zoo()
        print(expert_table(info))
        print({k: round(v, 3) for k, v in info["distance"].items() if "foreign" in k})
