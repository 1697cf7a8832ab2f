"""Task accuracy: the highest-likelihood answer wins, the labelled sets are sound, bad sets say why.

Scoring is checked three ways: hand-made log-likelihoods, a tiny model whose batched
scores are recomputed one unit at a time with a plain forward pass, and a tiny model
with one answer planted (its first token's logit raised), which must then be chosen
for every item.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fnweb.errors import FnwebError, Stopped
from fnweb.progress import StopFlag
from fnweb.prompts import BUILTIN_DIR, PromptSource, builtin_sets, load_pairs
from fnweb.tasks import (
    SENTIMENT_LABELS,
    TASKS,
    CandidateScore,
    TaskData,
    TaskItem,
    accuracy,
    encode_units,
    evaluate,
    get_task,
    load_items,
    measure,
    score_logits,
    task_data,
)


def hand_made(task_name: str, answers: list[int], logps: list[list[float]], tokens=None) -> tuple:
    """A TaskData of items with the given right answers, and scores with the given log-likelihoods."""
    task = TASKS[task_name]
    items = [TaskItem(f"q{i}", tuple(f"c{j}" for j in range(len(lp))), a, f"q{i}")
             for i, (a, lp) in enumerate(zip(answers, logps))]
    tokens = tokens or [[1] * len(lp) for lp in logps]
    scores = [CandidateScore(v, n, False) for lp, ns in zip(logps, tokens) for v, n in zip(lp, ns)]
    return TaskData(task, "hand", items, []), scores


# ---- scoring rules ------------------------------------------------------------------------


def test_choice_picks_the_highest_log_likelihood():
    data, scores = hand_made("mcq", [0, 2, 3, 1], [[-1.0, -2.0, -3.0, -4.0], [-5.0, -0.5, -0.7, -9.0],
                                                   [-3.0, -3.0, -3.0, -0.1], [-2.0, -2.0, -1.0, -2.0]])
    result = accuracy(data, scores)
    assert result.per_item == [True, False, True, False]
    assert result.chosen == [0, 1, 3, 2]
    assert (result.accuracy, result.correct, result.items, result.chance) == (0.5, 2, 4, 0.25)


def test_a_tie_is_not_counted_right():
    data, scores = hand_made("sentiment", [0, 1], [[-1.0, -1.0], [-1.0, -1.0]])
    assert accuracy(data, scores).per_item == [False, False]


def test_mean_length_normalisation_compares_per_token():
    # Candidate 1 has the lower sum but the higher per-token log-likelihood (-1.0 vs -1.5).
    logps, tokens = [[-3.0, -4.0]], [[2, 4]]
    data, scores = hand_made("sentiment", [1], logps, tokens)
    assert accuracy(data, scores).per_item == [False]
    mean_task = TaskData(replace(TASKS["sentiment"], length_norm="mean"), "hand", data.items, [])
    assert accuracy(mean_task, scores).per_item == [True]


def test_exact_scoring_needs_every_token_to_be_the_top_choice():
    task = TASKS["arithmetic"]
    items = [TaskItem("q0", ("42",), 0, "q0"), TaskItem("q1", ("7",), 0, "q1")]
    scores = [CandidateScore(-0.2, 2, True), CandidateScore(-0.1, 2, False)]
    result = accuracy(TaskData(task, "hand", items, []), scores)
    assert result.per_item == [True, False] and result.chance == 0.0 and result.majority == 0.0


def test_score_logits_sums_log_probabilities_and_checks_greedy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    score = score_logits(logits, torch.tensor([0, 1]))
    expected = F.log_softmax(logits, -1)[[0, 1], [0, 1]].sum()
    assert score.tokens == 2 and score.greedy and score.logp == pytest.approx(float(expected))
    assert not score_logits(logits, torch.tensor([0, 2])).greedy


def test_partial_scores_count_only_complete_items():
    data, scores = hand_made("sentiment", [0, 1, 0], [[-1.0, -2.0], [-1.0, -2.0], [-1.0, -2.0]])
    result = accuracy(data, scores[:3])  # item 1 has one of its two candidates measured
    assert result.items == 1 and result.per_item == [True]
    with pytest.raises(FnwebError, match="No sentiment item has been scored yet"):
        accuracy(data, scores[:1])


# ---- on a tiny model ----------------------------------------------------------------------


def direct_scores(lm, data) -> list[float]:
    """Each candidate's summed log-likelihood from its own plain forward pass (no batching, no padding).

    A unit that scores single-token options at once is unfolded into one sequence per option.
    """
    sequences = []
    for unit in data.units:
        if unit.options:
            sequences += [(unit.ids + (token,), unit.first) for token in unit.options]
        else:
            sequences.append((unit.ids, unit.first))
    out = []
    for ids, first in sequences:
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
        targets = torch.tensor(ids[first:])
        out.append(-float(F.cross_entropy(logits[first - 1 : -1].float(), targets, reduction="sum")))
    return out


@pytest.mark.parametrize("name", list(TASKS))
def test_tiny_model_accuracy_is_argmax_of_its_own_likelihoods(tiny_lm, name):
    data = task_data(tiny_lm.tokenizer, name, limit=6, seed=1)
    scores = measure(tiny_lm.model, data.units, pad_id=tiny_lm.tokenizer.pad_token_id, batch_size=5)
    direct = direct_scores(tiny_lm, data)
    assert [s.logp for s in scores] == pytest.approx(direct, abs=1e-3)
    result = accuracy(data, scores)
    first = 0
    for index, item in enumerate(data.items):
        mine = direct[first : first + len(item.candidates)]
        first += len(item.candidates)
        if data.task.scoring == "choice":
            others = [v for j, v in enumerate(mine) if j != item.answer]
            assert result.per_item[index] == (mine[item.answer] > max(others))


def test_one_pass_for_single_token_options_equals_a_pass_per_option(tiny_lm):
    items = [TaskItem(f"Pick letter number {i}.", ("A", "B", "C"), i % 3, str(i)) for i in range(4)]
    data = TaskData(TASKS["mcq"], "hand", items, encode_units(tiny_lm.tokenizer, items))
    assert len(data.units) == 4 and all(len(u.options) == 3 for u in data.units)
    scores = measure(tiny_lm.model, data.units, pad_id=0, batch_size=3)
    assert [s.logp for s in scores] == pytest.approx(direct_scores(tiny_lm, data), abs=1e-3)
    assert all(s.tokens == 1 for s in scores)


def test_single_token_candidates_share_one_unit_and_longer_ones_get_their_own(tokenizer):
    items = [TaskItem("Is it good?", ("A", "B"), 0, "a"), TaskItem("Is it good?", ("A", "extraordinary"), 1, "b")]
    a, b = (tokenizer(w)["input_ids"] for w in ("A", "B"))
    assert len(a) == len(b) == 1 and len(tokenizer("extraordinary")["input_ids"]) > 1
    units = encode_units(tokenizer, items)
    assert [(u.item, u.candidate) for u in units] == [(0, -1), (1, 0), (1, 1)]
    assert units[0].options == (a[0], b[0]) and units[0].first == len(units[0].ids)
    assert units[1].ids[: units[1].first] == units[2].ids[: units[2].first] == units[0].ids


def test_exact_units_score_the_answer_and_its_full_stop(tokenizer):
    data = task_data(tokenizer, "arithmetic", limit=3)
    for unit, item in zip(data.units, data.items):
        assert item.candidates[0] == item_answer(item) + "."
        assert tokenizer.decode(list(unit.ids[unit.first:])).strip() == item.candidates[0]


def item_answer(item) -> str:
    row = next(r for r in rows("arithmetic_task") if " ".join(r["question"].split()) == item.key)
    return row["answer"]


def test_a_given_reply_start_is_context_not_answer(tokenizer):
    items = [TaskItem("Which one?", ("Saturn", "Mars"), 0, "k")]
    plain = encode_units(tokenizer, items)
    led = encode_units(tokenizer, items, reply="The answer is ")
    for before, after in zip(plain, led):
        assert after.ids[after.first:] != () and tokenizer.decode(list(after.ids[after.first:])).strip() == \
            tokenizer.decode(list(before.ids[before.first:])).strip()
        assert tokenizer.decode(list(after.ids[: after.first])).endswith("The answer is") or \
            tokenizer.decode(list(after.ids[: after.first])).endswith("The answer is ")


def test_a_planted_answer_is_chosen_for_every_item(tiny_lm):
    """Raise the logit of the first token of 'negative': the model must answer negative throughout."""
    data = task_data(tiny_lm.tokenizer, "sentiment", limit=8)
    negative = data.units[1]  # item 0, candidate 1 ('negative' is two tokens of the tiny tokenizer)
    assert (negative.item, negative.candidate) == (0, 1)
    planted_token = negative.ids[negative.first]
    handle = tiny_lm.model.lm_head.register_forward_hook(
        lambda _m, _a, out: out.index_add(-1, torch.tensor([planted_token]), torch.full((*out.shape[:-1], 1), 50.0)))
    try:
        result = accuracy(data, measure(tiny_lm.model, data.units, pad_id=0))
    finally:
        handle.remove()
    assert result.chosen == [1] * 8
    assert result.accuracy == sum(item.answer == 1 for item in data.items) / 8


def test_evaluate_reports_progress_and_stops(tiny_lm):
    events = []
    result = evaluate(tiny_lm, "mcq", limit=3, progress=events.append)
    passes = len(task_data(tiny_lm.tokenizer, "mcq", limit=3).units)
    assert result.items == 3 and events[-1].done == events[-1].total == passes
    stop = StopFlag()
    stop.set()
    with pytest.raises(Stopped):
        evaluate(tiny_lm, "mcq", limit=3, stop=stop)


# ---- the labelled sets ------------------------------------------------------------------


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (BUILTIN_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", list(TASKS))
def test_each_task_has_at_least_100_distinct_labelled_items(name):
    task = get_task(name)
    items, notes = load_items(task)
    assert len(items) >= 100 and not notes
    keys = [" ".join(item.prompt.lower().split()) for item in items]
    assert len(set(keys)) == len(keys)
    assert all(0 <= item.answer < len(item.candidates) for item in items)


def test_sentiment_labels_are_balanced():
    labels = Counter(row["label"] for row in rows("sentiment_task"))
    assert set(labels) == set(SENTIMENT_LABELS) and labels["positive"] == labels["negative"]


def test_multiple_choice_answers_spread_over_every_letter():
    data = rows("mcq")
    assert all(len(row["choices"]) == 4 and len(set(row["choices"])) == 4 for row in data)
    assert Counter(row["answer"] for row in data) == {0: 32, 1: 32, 2: 32, 3: 32}
    questions = [row["question"].lower() for row in data]
    assert len(set(questions)) == len(questions)


def test_arithmetic_answers_are_right():
    operations = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b}
    checked = 0
    for row in rows("arithmetic_task"):
        assert re.fullmatch(r"-?\d+", row["answer"]), row
        found = re.fullmatch(r"What is (\d+) ([+\-×]) (\d+)\?", row["question"])
        if found:
            a, op, b = found.groups()
            assert int(row["answer"]) == operations[op](int(a), int(b)), row
            checked += 1
    assert checked >= 90  # the rest are word problems, checked by hand


def test_task_sets_are_new_prompts_distinct_from_every_other_set():
    seen: dict[str, str] = {}
    for name in builtin_sets():
        for pair in load_pairs(PromptSource(f"builtin:{name}")):
            key = " ".join(pair.prompt.lower().split())
            assert key not in seen, f"{name} repeats a prompt of {seen.get(key)}: {pair.prompt[:60]}"
            seen[key] = name


# ---- bad input --------------------------------------------------------------------------


def test_a_set_without_labels_is_a_clear_error(tokenizer):
    with pytest.raises(FnwebError, match=r"builtin:factual has no labels for the sentiment task: .*fields text, "
                                         r"label .*fields seen: prompt, response"):
        task_data(tokenizer, "sentiment", source="builtin:factual")
    with pytest.raises(FnwebError, match="no labels for the mcq task"):
        task_data(tokenizer, "mcq", source="builtin:sentiment_task")


@pytest.mark.parametrize("name, row, message", [
    ("sentiment", {"text": "Fine.", "label": "neutral"}, "item 2: label 'neutral' is not positive or negative"),
    ("mcq", {"question": "Q?", "choices": ["a", "b"], "answer": 5}, "item 2: answer 5 is not one of its 2 choices"),
    ("mcq", {"question": "Q?", "choices": ["a"], "answer": 0}, "item 2: it needs 2 to 8 non-empty choices"),
    ("arithmetic", {"question": "1 + 1?", "answer": " "}, "item 2: its answer is empty"),
    ("sentiment", {"text": "Fine."}, "item 2: field 'label' is missing"),
])
def test_bad_rows_name_the_item(tmp_path, tokenizer, name, row, message):
    good = {"sentiment": {"text": "Great.", "label": "positive"},
            "mcq": {"question": "Which?", "choices": ["x", "y"], "answer": 1},
            "arithmetic": {"question": "2 + 2?", "answer": "4"}}[name]
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(FnwebError, match=re.escape(message)):
        task_data(tokenizer, name, source=str(path))


def test_unknown_task_lists_the_tasks():
    with pytest.raises(FnwebError, match="Unknown task 'sst2'; choose one of: sentiment, mcq, arithmetic"):
        get_task("sst2")


def test_template_prompts_are_left_out_with_a_note():
    task = get_task("mcq")
    items, _ = load_items(task)
    used = {items[0].key, items[1].key}
    kept, notes = load_items(task, exclude=used)
    assert len(kept) == len(items) - 2 and used.isdisjoint(i.key for i in kept)
    assert notes == ["builtin:mcq: 2 of its 128 items were used to build the template and were left out."]


def test_limit_and_seed_choose_a_reproducible_subset():
    task = get_task("arithmetic")
    assert load_items(task, limit=10, seed=3)[0] == load_items(task, limit=10, seed=3)[0]
    assert load_items(task, limit=10, seed=3)[0] != load_items(task, limit=10, seed=4)[0]
    assert len(load_items(task, limit=10)[0]) == 10


