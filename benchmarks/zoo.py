"""Build (or load from cache) the expert zoo: `python -m benchmarks.run --only zoo`.

- tokenizer: character level, trained with `tokenizers` on the pretraining text;
- base: LLaMA-style, ~0.7M parameters, pretrained on half of the BBC train articles;
- 17 experts fine-tuned from the base, one per task (5 topics, 12 string tasks);
- 2 noisy experts (shift, sports) fine-tuned from a differently initialised base;
- held-out scores of the base and every expert on every task (scores.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import torch

from benchmarks.common import (
    CACHE,
    ROOT,
    ZOO,
    Encoded,
    encode,
    make_model,
    score,
    threads,
    token_accuracy,
    train_batches,
    train_tokenizer,
)  # fmt: skip
from benchmarks.tasks import ALL_TASKS, NOISY_TASKS, TOPICS, clean, kind, splits, text_splits

SETTINGS = {
    # version 5: base_steps 150 -> 400 and expert_lr 3e-3 -> 1e-3. Version 4's experts
    # interfered so much that no merge beat the base (docs/benchmarks.md, Analysis).
    "hidden": 128, "layers": 4, "base_steps": 400, "base_batch": 32, "base_len": 64,
    "base_string_batch": 64, "base_string_per_task": 500, "base_lr": 3e-3,
    "noisy_base_steps": 30, "string_expert_steps": 300, "text_expert_steps": 60,
    "expert_batch": 32, "text_expert_batch": 16, "expert_lr": 1e-3, "text_expert_lr": 1e-3, "version": 5,
}  # fmt: skip
# experiments: ZOO_SETTINGS='{"expert_lr": 0.001}' overrides entries (and the fingerprint)
SETTINGS.update(json.loads(os.environ.get("ZOO_SETTINGS") or "{}"))


def fingerprint() -> str:
    return hashlib.sha1(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:10]


def train(model, rows, steps: int, batch: int, lr: float, seed: int, mix=None) -> float:
    """AdamW with linear decay to 10%; loss on labelled tokens only. Returns the last loss.

    mix=(rows2, batch2): alternate batches of `rows` and `rows2` (the base's pretraining).
    """
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    total = steps * (2 if mix else 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - 0.9 * s / max(total, 1))
    model.train()
    last = float("nan")
    stream = train_batches(rows, batch, steps, seed)
    if mix:
        other = train_batches(mix[0], mix[1], steps, seed + 1)
        stream = (b for pair in zip(stream, other) for b in pair)
    for ids, mask, labels in stream:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        last = float(loss.detach())
    model.eval()
    return last


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def load_zoo() -> dict:
    info = json.loads((ZOO / "zoo.json").read_text())
    return info


def build(force: bool = False) -> dict:
    """Tokenizer, bases, experts (in ZOO_JOBS parallel processes, default 2), then scores."""
    threads()
    started = time.perf_counter()
    jobs = int(os.environ.get("ZOO_JOBS", "2"))
    marker = ZOO / "zoo.json"
    if marker.exists() and not force and not os.environ.get("ZOO_SHARD"):
        info = json.loads(marker.read_text())
        if info.get("fingerprint") == fingerprint():
            print(f"zoo: cached at {ZOO} (built in {info['seconds']:.0f}s)")
            return info
    ZOO.mkdir(parents=True, exist_ok=True)
    data = {t: splits(t) for t in ALL_TASKS}
    pretrain = [clean(a) for t in TOPICS for a in text_splits(t)["pretrain"]]
    string_text = [r["prompt"] + r["response"] for t in ALL_TASKS if kind(t) == "string"
                   for r in data[t]["train"]]  # fmt: skip
    tok = train_tokenizer(pretrain + string_text)
    vocab = len(tok)
    for task in ALL_TASKS:  # calibration / test files (the merge methods read calibration)
        folder = ZOO / "data" / task
        folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(folder / "calibration.jsonl", data[task]["calibration"])
        write_jsonl(folder / "test.jsonl", data[task]["test"])
    base_rows = []
    for article in pretrain:
        for i in range(0, max(len(article) - SETTINGS["base_len"], 1), SETTINGS["base_len"]):
            ids = tok(article[i : i + SETTINGS["base_len"]])["input_ids"]
            base_rows.append((ids, ids))
    # the base also sees a little of every string task's train split (prompt format + skills
    # to specialise); experts then fine-tune on far more of their own task
    string_rows = [encode(r, tok)[:2] for t in ALL_TASKS if kind(t) == "string"
                   for r in data[t]["train"][: SETTINGS["base_string_per_task"]]]  # fmt: skip
    timings = {}

    def save(model, name, stamp, seconds):
        path = ZOO / name
        model.save_pretrained(str(path), safe_serialization=True)
        tok.save_pretrained(str(path))
        (path / "stage.json").write_text(json.dumps({"stamp": stamp, "seconds": seconds}))
        return str(path)

    def cached(name, stamp):
        """Stages are cached one model at a time: an interrupted build resumes."""
        file = ZOO / name / "stage.json"
        if file.exists() and json.loads(file.read_text())["stamp"] == stamp:
            timings[name] = json.loads(file.read_text())["seconds"]
            print(f"zoo: {name} cached ({timings[name]:.0f}s when built)", flush=True)
            return str(ZOO / name)
        return None

    paths = {}
    for name, seed, steps in [("base", 0, SETTINGS["base_steps"]),
                              ("noisy_base", 1, SETTINGS["noisy_base_steps"])]:  # fmt: skip
        stamp = [SETTINGS[k] for k in ("hidden", "layers", "base_batch", "base_len", "base_lr",
                 "base_string_batch", "base_string_per_task")] + [steps, seed, vocab]  # fmt: skip
        if (path := cached(name, stamp)) is not None:
            paths[name] = path
            continue
        t0 = time.perf_counter()
        model = make_model(vocab, seed, SETTINGS["hidden"], SETTINGS["layers"])
        loss = train(model, base_rows, steps, SETTINGS["base_batch"], SETTINGS["base_lr"], seed,
                     mix=(string_rows, SETTINGS["base_string_batch"]))  # fmt: skip
        timings[name] = time.perf_counter() - t0
        paths[name] = save(model, name, stamp, timings[name])
        print(f"zoo: {name} loss {loss:.3f} in {timings[name]:.0f}s", flush=True)
    n_params = sum(p.numel() for p in make_model(vocab, 0, SETTINGS["hidden"],
                                                 SETTINGS["layers"]).parameters())  # fmt: skip
    experts = [(t, "base", f"expert_{t}") for t in ALL_TASKS]
    experts += [(t, "noisy_base", f"noisy_{t}") for t in NOISY_TASKS]
    shard = os.environ.get("ZOO_SHARD")  # "i/k": train only every k-th expert (parallel builds)
    if not shard and jobs > 1:  # one process per shard; each caches its experts as it goes
        children = [
            subprocess.Popen([sys.executable, "-m", "benchmarks.zoo"], cwd=str(ROOT.parent),
                             env=dict(os.environ, ZOO_SHARD=f"{i}/{jobs}"))
            for i in range(jobs)
        ]  # fmt: skip
        if any(child.wait() for child in children):
            raise RuntimeError("zoo: an expert shard failed (see its output above)")
    for i, (task, base_name, name) in enumerate(experts):
        if shard and i % int(shard.split("/")[1]) != int(shard.split("/")[0]):
            continue
        keys = (("text_expert_steps", "text_expert_batch") if kind(task) == "text" else
                ("string_expert_steps", "expert_batch", "expert_lr"))  # fmt: skip
        stamp = [SETTINGS[k] for k in keys] + [task, base_name, i]
        stamp.append(json.loads((ZOO / base_name / "stage.json").read_text())["stamp"])
        if (path := cached(name, stamp)) is not None:
            paths[name] = path
            continue
        t0 = time.perf_counter()
        model = make_model(vocab, 0, SETTINGS["hidden"], SETTINGS["layers"])
        model.load_state_dict(type(model).from_pretrained(paths[base_name]).state_dict())
        rows = [encode(r, tok)[:2] for r in data[task]["train"]]
        text = kind(task) == "text"
        loss = train(
            model, rows, SETTINGS["text_expert_steps" if text else "string_expert_steps"],
            SETTINGS["text_expert_batch" if text else "expert_batch"],
            SETTINGS["text_expert_lr" if text else "expert_lr"], seed=100 + i,
        )  # fmt: skip
        timings[name] = time.perf_counter() - t0
        paths[name] = save(model, name, stamp, timings[name])
        print(f"zoo: {name} loss {loss:.3f} in {timings[name]:.0f}s", flush=True)
    if shard:
        return {}
    train_seconds = sum(timings.values())
    # held-out scores of every model on every task
    scoring = time.perf_counter()
    tests = {t: Encoded(t, data[t]["test"], tok) for t in ALL_TASKS}
    scores, per_token = {}, {}
    from transformers import LlamaForCausalLM

    for name, path in paths.items():
        model = LlamaForCausalLM.from_pretrained(path).eval()
        scores[name] = {t: score(model, tests[t]) for t in ALL_TASKS}
        per_token[name] = {t: token_accuracy(model, tests[t]) for t in ALL_TASKS
                           if kind(t) == "string"}  # fmt: skip
    info = {
        "fingerprint": fingerprint(), "settings": SETTINGS, "paths": paths, "vocab": vocab,
        "params": n_params, "scores": scores, "token_accuracy": per_token, "timings": timings,
        "seconds": train_seconds + time.perf_counter() - scoring,
        "train_seconds": train_seconds, "cpu_seconds_this_run": time.process_time(),
        "wall_seconds_this_run": time.perf_counter() - started, "jobs": jobs,
    }  # fmt: skip
    marker.write_text(json.dumps(info, indent=1))
    print(f"zoo: built in {info['seconds']:.0f}s ({n_params} parameters per model)")
    return info


def expert_table(info: dict) -> str:
    """Markdown: base vs own expert on each task's test split."""
    lines = ["| task | kind | metric | base | own expert | noisy expert | token accuracy base / expert |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in ALL_TASKS:
        metric = "bits/byte (lower is better)" if kind(t) == "text" else "exact match"
        em = info.get("token_accuracy", {})
        em_cell = (f"{em['base'][t]:.2f} / {em[f'expert_{t}'][t]:.2f}"
                   if kind(t) == "string" and em else "")  # fmt: skip
        sign = -1 if kind(t) == "text" else 1
        noisy = info["scores"].get(f"noisy_{t}", {}).get(t)
        lines.append(
            f"| {t} | {kind(t)} | {metric} | {sign * info['scores']['base'][t]:.3f} | "
            f"{sign * info['scores'][f'expert_{t}'][t]:.3f} | "
            f"{'' if noisy is None else f'{sign * noisy:.3f}'} | {em_cell} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    build()
    if not os.environ.get("ZOO_SHARD"):
        print(expert_table(load_zoo()))
        print(CACHE)
