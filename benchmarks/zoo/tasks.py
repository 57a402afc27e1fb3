"""Tasks of the re-routing zoo (zoo version 6): sixteen string tasks, each under two tags.

The base learns every task under an *alias* tag (`<a03> abc=`); each expert learns to answer
the task under a *new* tag (`<t03> abc=`) the base has never seen. An expert thus re-routes a
skill the base already has, as instruction tuning does for an LLM, and its task vector is
small and mostly local: the new tag's embedding row plus a light touch on the body. That is
the regime in which data-free merging (task arithmetic, TIES) is known to work, so a merging
method can be ranked against it.

Every task has three disjoint word splits: train (pretraining under the alias and
fine-tuning under the tag), calibration (100 samples, the only data a merge may look at) and
test (100 samples, held out for the scores).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

N_CALIB = 100
N_TEST = 100
N_TRAIN = 2000
LETTERS = string.ascii_lowercase


def _word(r: random.Random, lo: int = 2, hi: int = 4) -> str:
    return "".join(r.choice(LETTERS) for _ in range(r.randint(lo, hi)))


def _rot(w: str, k: int) -> str:
    return "".join(LETTERS[(LETTERS.index(c) + k) % 26] for c in w)


def _consonant_word(r: random.Random) -> str:
    while True:
        w = _word(r)
        if any(c not in "aeiou" for c in w):
            return w


# word generator, answer: each maps a word to its response
TASKS: dict[str, tuple[Callable[[random.Random], str], Callable[[str], str]]] = {
    "shift": (_word, lambda w: _rot(w, 1)),
    "upper": (_word, str.upper),
    "double": (_word, lambda w: "".join(c + c for c in w)),
    "reverse": (_word, lambda w: w[::-1]),
    "back": (_word, lambda w: _rot(w, -1)),
    "repeat": (_word, lambda w: w + w),
    "rotate": (_word, lambda w: w[1:] + w[0]),
    "swap": (_word, lambda w: w[-1] + w[1:-1] + w[0]),
    "first": (_word, lambda w: w[0]),
    "last": (_word, lambda w: w[-1]),
    "drop": (_word, lambda w: w[1:]),
    "count": (lambda r: _word(r, 1, 6), lambda w: str(len(w))),
    "vowels": (_consonant_word, lambda w: w.translate({ord(v): None for v in "aeiou"})),
    "max": (_word, max),
    "min": (_word, min),
    "mirror": (lambda r: _word(r, 2, 3), lambda w: w + w[::-1]),
}
TARGETS = ["shift", "upper", "double", "reverse"]
ADDITIONS = [t for t in TASKS if t not in TARGETS]  # fixed order of the pool after the targets
ALL_TASKS = TARGETS + ADDITIONS
FOREIGN_TASKS = ["shift", "upper"]  # fine-tuned from a differently initialised base


def alias_tag(task: str) -> str:
    return f"<a{ALL_TASKS.index(task):02d}>"


def new_tag(task: str) -> str:
    return f"<t{ALL_TASKS.index(task):02d}>"


def tags() -> list[str]:
    return [alias_tag(t) for t in ALL_TASKS] + [new_tag(t) for t in ALL_TASKS]


def words(task: str) -> dict[str, list[str]]:
    """Disjoint test / calibration / train words, seeded by the task name."""
    r = random.Random(f"rzoo-{task}")
    gen = TASKS[task][0]
    seen: set[str] = set()
    out: dict[str, list[str]] = {"test": [], "calibration": [], "train": []}
    for split, size in (("test", N_TEST), ("calibration", N_CALIB), ("train", N_TRAIN)):
        tries = 0
        while len(out[split]) < size and tries < 200_000:
            tries += 1
            w = gen(r)
            if w not in seen:
                seen.add(w)
                out[split].append(w)
    return out


def record(task: str, word: str, alias: bool = False) -> dict[str, str]:
    tag = alias_tag(task) if alias else new_tag(task)
    return {"prompt": f"{tag} {word}=", "response": TASKS[task][1](word)}


def corpus() -> list[str]:
    """Every character a prompt or response can hold (the tokenizer's alphabet)."""
    out = []
    for t in ALL_TASKS:
        for w in words(t)["train"][:200]:
            r = record(t, w)
            out.append(r["prompt"][5:] + r["response"])
    return out
