"""The vision tier's zoo: a tiny ViT pretrained on load_digits and 20 task experts.

Built once (two worker processes), seeded, cached in benchmarks/.cache/vision/zoo.pt.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from benchmarks.common import CACHE
from mergekit_fw.cli import toy_vit as tv

VERSION = 2  # 2: prototype (zero-shot-like) heads instead of fitted probes, lr 1e-3
PATH = CACHE / "vision" / "zoo.pt"


def _expert(args):
    base_state, name, seed = args
    torch.set_num_threads(1)
    splits = tv.digits_splits()
    base = tv.TinyViT()
    base.load_state_dict(base_state)
    task = tv.TASK[name]
    state, head = tv.finetune(base, task, splits, seed=seed)
    expert = tv.TinyViT()
    expert.load_state_dict(state)
    test = task.apply(*splits["test"])
    return (
        name,
        state,
        head.state_dict(),
        tv.accuracy(expert, head, *test),
        tv.accuracy(base, head, *test),
    )


def build(force: bool = False) -> dict:
    if PATH.exists() and not force:
        zoo = torch.load(PATH, weights_only=False)
        if zoo.get("version") == VERSION:
            return zoo
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    splits = tv.digits_splits()
    base = tv.pretrain(splits)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    jobs = [(base_state, task.name, 100 + i) for i, task in enumerate(tv.TASKS)]
    workers = int(os.environ.get("ZOO_JOBS", "2"))
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        results = list(pool.map(_expert, jobs))
    zoo = {
        "version": VERSION,
        "base": base_state,
        "experts": {name: state for name, state, _, _, _ in results},
        "heads": {name: head for name, _, head, _, _ in results},
        "expert_acc": {name: acc for name, _, _, acc, _ in results},
        "base_acc": {name: acc for name, _, _, _, acc in results},
        "seconds": time.perf_counter() - t0,
        "params": sum(v.numel() for v in base_state.values()),
    }
    PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(zoo, PATH)
    return {**zoo, "built_now": True}
