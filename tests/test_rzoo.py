"""The re-routing zoo's pieces (benchmarks/zoo/): splits, tags, the per-row learning rate
and the done-bar table. The zoo itself is built by `make bench-zoo`, not here."""

from __future__ import annotations

from benchmarks.zoo.build import tokenizer, train
from benchmarks.zoo.lm import make_model
from benchmarks.zoo.report import default_method, done_bar
from benchmarks.zoo.tasks import ALL_TASKS, TASKS, alias_tag, new_tag, record, words


def test_splits_are_disjoint_seeded_and_full():
    for task in ("shift", "mirror", "count"):
        a, b = words(task), words(task)
        assert a == b
        sets = [set(a[k]) for k in ("train", "calibration", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert [len(a[k]) for k in ("train", "calibration", "test")] == [2000, 100, 100]
    assert len(TASKS) == 16 and len(set(ALL_TASKS)) == 16


def test_tags_are_single_tokens_and_answers_right():
    tok = tokenizer()
    for task in ("shift", "max"):
        for tag in (alias_tag(task), new_tag(task)):
            ids = tok(f"{tag} ab=")["input_ids"]
            assert tok.convert_ids_to_tokens(ids)[1] == tag
    assert record("shift", "azb") == {"prompt": f"{new_tag('shift')} azb=", "response": "bac"}
    assert record("mirror", "ab", alias=True)["response"] == "abba"
    assert alias_tag("shift") != new_tag("shift")


def test_fast_rows_move_faster():
    """Adam's step on the tag row is scaled by mult; the other rows move at the base lr."""
    tok = tokenizer()
    rows = [([1, 5, 6, 7, 8], [-100, -100, -100, 7, 8])] * 4
    moved = {}
    for mult in (1.0, 20.0):
        model = make_model(len(tok), 0, hidden=16, layers=1)
        before = model.get_input_embeddings().weight.detach().clone()
        train(model, rows, steps=3, batch=2, lr=1e-3, seed=0, fast_rows=[5], mult=mult)
        delta = (model.get_input_embeddings().weight.detach() - before).norm(dim=1)
        moved[mult] = (float(delta[5]), float(delta[6]))
    assert moved[20.0][0] > 10 * moved[1.0][0] > 0
    assert abs(moved[20.0][1] - moved[1.0][1]) < 0.5 * moved[1.0][1] + 1e-9


def test_done_bar_flags_a_loss():
    def row(exp, n, m, v):
        return {f"{exp}|{n}|{m}": {"exp": exp, "n": n, "method": m, "mean_normalised": v}}

    results = {}
    for n in (4, 8, 12, 16):
        results |= row("irrelevance", n, default_method(), 0.95)
        results |= row("irrelevance", n, "TIES", 0.96 if n == 8 else 0.9)
        results |= row("irrelevance", n, "task arithmetic", 0.9)
    lines = done_bar(results, default_method())
    cells = [line.strip("| ").split(" | ") for line in lines[2:]]
    verdicts = {c[0]: c[2] for c in cells}
    assert verdicts[f"irrelevance, 8 models: {default_method()} >= TIES"] == "no"
    assert verdicts[f"irrelevance, 4 models: {default_method()} >= TIES"] == "yes"
    assert verdicts["irrelevance: 16-model score within 0.02 of the 4-model score"] == "yes"
