"""Eight short instruction tasks with exact-match answers, and their fixed, disjoint splits.

Every task draws its inputs from a space of thousands, so train, calibration (32) and test (100)
inputs are disjoint: the unique inputs of one seeded draw are shuffled once and cut in three.
Prompts are chat messages (system + user); the answer is the assistant turn.
"""

from __future__ import annotations

import random
import string

SYSTEM = "Answer with the result only."
N_CALIB, N_TEST = 32, 100
N_TRAIN = 256  # inputs held for training (an adapter sees steps * batch of them, cycled)

WORDS = (
    "cat dog sun red blue tree fish bird milk rain star book door hat cup car "
    "box egg pen king moon ship gold lamp rose wind snow fire sand road leaf "
    "bell coat duck frog goat lion ring sock toy vase wolf bear cake corn drum"
).split()
LETTERS = string.ascii_lowercase


def _reverse_words(rng):
    w = rng.sample(WORDS, 3)
    return f"Reverse the order of the words: {' '.join(w)}", " ".join(reversed(w))


def _uppercase(rng):
    w = rng.sample(WORDS, 2)
    return f"Write in capital letters: {' '.join(w)}", " ".join(w).upper()


def _next_letters(rng):
    c = [rng.choice(LETTERS[:-1]) for _ in range(3)]
    answer = " ".join(LETTERS[LETTERS.index(x) + 1] for x in c)
    return f"Replace each letter by the next one in the alphabet: {' '.join(c)}", answer


def _add(rng):
    a, b = rng.randint(10, 99), rng.randint(1, 9)
    return f"Add the numbers: {a} + {b}", str(a + b)


def _last_word(rng):
    w = rng.sample(WORDS, 4)
    return f"Repeat only the last word: {' '.join(w)}", w[-1]


def _sort_letters(rng):
    c = rng.sample(LETTERS, 3)
    return f"Sort the letters alphabetically: {' '.join(c)}", " ".join(sorted(c))


def _date_format(rng):
    y, m, d = rng.randint(1950, 2049), rng.randint(1, 12), rng.randint(1, 28)
    return f"Rewrite the date {y}-{m:02d}-{d:02d} as DD/MM/YYYY", f"{d:02d}/{m:02d}/{y}"


def _acronym(rng):
    w = rng.sample(WORDS, 3)
    return f"Write the first letter of each word in capitals: {' '.join(w)}", "".join(
        x[0].upper() for x in w
    )


TASKS = {
    "reverse_words": _reverse_words,
    "add": _add,
    "sort_letters": _sort_letters,
    "date_format": _date_format,
    "uppercase": _uppercase,
    "next_letters": _next_letters,
    "last_word": _last_word,
    "acronym": _acronym,
}
TARGETS = ("reverse_words", "add", "sort_letters", "date_format")  # the 4-target pool
OTHERS = tuple(t for t in TASKS if t not in TARGETS)


def splits(task: str, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """{'train', 'calib', 'test'}: disjoint (prompt, answer) lists, fixed by the seed."""
    rng = random.Random(f"{task}:{seed}")
    need = N_TRAIN + N_CALIB + N_TEST
    seen: dict[str, str] = {}
    while len(seen) < need:
        prompt, answer = TASKS[task](rng)
        seen.setdefault(prompt, answer)
    items = sorted(seen.items())
    rng.shuffle(items)
    return {
        "test": items[:N_TEST],
        "calib": items[N_TEST : N_TEST + N_CALIB],
        "train": items[N_TEST + N_CALIB :],
    }


NOISE = "noise"  # the adapter trained on random answers (issue 21's noisy expert)


def noise_train(seed: int = 0) -> list[tuple[str, str]]:
    """The noise adapter's training pairs: the train prompts of every task (32 each), each
    with a random answer of 1-3 random words, so it learns the answer format but no task."""
    rng = random.Random(f"{NOISE}:{seed}")
    pairs = [(p, " ".join(rng.sample(WORDS, rng.randint(1, 3))))
             for t in TASKS for p, _ in splits(t)["train"][:32]]  # fmt: skip
    rng.shuffle(pairs)
    return pairs


def messages(prompt: str, answer: str | None = None) -> list[dict]:
    out = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    if answer is not None:
        out.append({"role": "assistant", "content": answer})
    return out
