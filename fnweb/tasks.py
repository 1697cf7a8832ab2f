"""Labelled tasks scored by answer log-likelihood: sentiment, multiple choice, arithmetic.

A task (one row of ``TASKS``) says where its labelled items come from, how an item
becomes a user message and candidate answers, and how the model's answer is scored
(one row of ``SCORINGS``):

- **choice**: the answer is the candidate whose tokens (not the end of turn after them)
  have the highest log-likelihood, summed (``length_norm="sum"``) or per token
  (``"mean"``: long candidates do not lose for being long). An item is right only when
  the right candidate beats every other strictly: ties never favour a position.
  Chance is 1 / candidates.
- **exact**: one candidate, the right answer with the mark that ends it (``42.``); right
  when each of its tokens is the model's top-1: what greedy decoding writes. Chance 0.

Items become ``TaskUnit``s: token ids of the message and a candidate as the assistant's
reply, through the chat template as everywhere in fnweb (``encode_prompt_and_response``),
and where the scored tokens start. A task may give the reply's first words (``reply``,
e.g. ``The answer is``): context, not scored, so a chat model is scored on the answer
rather than on how it likes to open a reply. When every candidate of a choice item is
one token (``positive`` and ``negative`` for SmolLM2), one unit of the context alone
scores them all from the logits at its last position: the same numbers as a unit per
candidate (causal attention), for a fraction of the compute. ``score_unit`` turns a
unit's logits into one ``CandidateScore`` per candidate it covers, ``measure`` runs a
model over units (under whatever hooks the caller has applied), and ``accuracy`` turns
the scores into a ``TaskAccuracy``.

It knows nothing about templates, masks or experiments.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FnwebError
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import Pair, PromptSource, encode_prompt_and_response, read_rows, rows_to_pairs

LENGTH_NORMS = ("sum", "mean")
SENTIMENT_LABELS = ("positive", "negative")
LETTERS = "ABCDEFGH"


# ---- scoring rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateScore:
    """How a model scores one candidate answer."""

    logp: float  # sum of the log-probabilities of the candidate's scored tokens
    tokens: int  # how many tokens that sum covers
    greedy: bool  # every one of those tokens was the model's top-1 next token


def _choice_correct(scores: Sequence[CandidateScore], answer: int, length_norm: str) -> tuple[bool, int]:
    values = np.array([s.logp / s.tokens if length_norm == "mean" else s.logp for s in scores])
    chosen = int(np.argmax(values))
    others = np.delete(values, answer)
    return bool(values[answer] > others.max()) if len(others) else True, chosen


def _exact_correct(scores: Sequence[CandidateScore], answer: int, _length_norm: str) -> tuple[bool, int]:
    return scores[answer].greedy, answer if scores[answer].greedy else -1


@dataclass(frozen=True)
class Scoring:
    """How candidate scores become right or wrong: judge gives (correct, candidate chosen or -1)."""

    judge: Callable[[Sequence[CandidateScore], int, str], tuple[bool, int]]
    chance: Callable[[int], float]  # expected accuracy of guessing, given the number of candidates


SCORINGS = {
    "choice": Scoring(_choice_correct, lambda n: 1.0 / n),
    "exact": Scoring(_exact_correct, lambda n: 0.0),
}


# ---- the tasks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskItem:
    """One labelled item, ready to encode."""

    prompt: str  # the user's message
    candidates: tuple[str, ...]  # the answers the model is scored on (the assistant's reply)
    answer: int  # index of the right candidate
    key: str  # the row's prompt as a prompt set reads it, whitespace-normalised (to leave out a template's)


def _sentiment(row: dict, prompt: str) -> tuple[str, tuple[str, ...], int]:
    label = str(row["label"]).strip().lower()
    if label not in SENTIMENT_LABELS:
        raise ValueError(f"label '{row['label']}' is not positive or negative")
    return prompt.format(text=_clean(row["text"])), SENTIMENT_LABELS, SENTIMENT_LABELS.index(label)


def _multiple_choice(row: dict, prompt: str) -> tuple[str, tuple[str, ...], int]:
    choices = [_clean(c) for c in row["choices"]]
    if not 2 <= len(choices) <= len(LETTERS) or not all(choices):
        raise ValueError(f"it needs 2 to {len(LETTERS)} non-empty choices (got {len(choices)})")
    answer = row["answer"]
    index = answer if isinstance(answer, int) else LETTERS.find(str(answer).strip()[:1].upper())
    if not 0 <= index < len(choices):
        raise ValueError(f"answer {answer!r} is not one of its {len(choices)} choices")
    lettered = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return prompt.format(question=_clean(row["question"]), choices=lettered), tuple(choices), index


def _short_answer(row: dict, prompt: str) -> tuple[str, tuple[str, ...], int]:
    answer = _clean(row["answer"])
    if not answer:
        raise ValueError("its answer is empty")
    return prompt.format(question=_clean(row["question"])), (answer.rstrip(".") + ".",), 0


def _clean(value) -> str:
    return "" if value is None else " ".join(str(value).split())


@dataclass(frozen=True)
class Task:
    """A labelled task: its data, how an item is asked, and how the answer is scored."""

    name: str
    source: str  # the labelled set it reads by default
    fields: tuple[str, ...]  # fields every row needs (the labels among them)
    prompt: str  # the user's message, with the row's fields as {placeholders}
    to_item: Callable[[dict, str], tuple[str, tuple[str, ...], int]]  # row, prompt -> message, candidates, answer
    scoring: str  # a key of SCORINGS
    length_norm: str  # sum | mean: how candidates' log-likelihoods are compared
    description: str
    reply: str = ""  # the start of the assistant's reply, given and not scored

    def __post_init__(self):
        if self.scoring not in SCORINGS or self.length_norm not in LENGTH_NORMS:
            raise FnwebError(f"Task {self.name}: scoring must be one of {', '.join(SCORINGS)} and length "
                             f"normalisation one of {', '.join(LENGTH_NORMS)}.")


# Formats chosen on the embedded SmolLM2-135M-Instruct (see the prompts README): letters A-D
# scored at chance (it says "A" to nearly everything), the choice's own text after "The
# answer is" (cloze, as small models are usually evaluated) well above; a bare number
# scored 0, as the model opens with "The answer is", so that start is given.
TASKS = {
    "sentiment": Task(
        "sentiment", "builtin:sentiment_task", ("text", "label"),
        "Review: {text}\nDoes this review express a sentiment of positive or negative?\nAnswer:",
        _sentiment, "choice", "sum",
        "Product and service reviews; the model answers positive or negative.",
    ),
    "mcq": Task(
        "mcq", "builtin:mcq", ("question", "choices", "answer"),
        "{question}", _multiple_choice, "choice", "sum",
        "Four-choice questions (facts, science, everyday reasoning, simple maths), scored by the likelihood "
        "of each choice's text as the answer.",
        reply="The answer is ",
    ),
    "arithmetic": Task(
        "arithmetic", "builtin:arithmetic_task", ("question", "answer"),
        "{question}", _short_answer, "exact", "sum",
        "Short sums, differences, products and word problems; right when greedy decoding writes the number "
        "and its full stop exactly.",
        reply="The answer is ",
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``, or an error listing the tasks."""
    if name not in TASKS:
        raise FnwebError(f"Unknown task '{name}'; choose one of: {', '.join(TASKS)}.")
    return TASKS[name]


# ---- items and units ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskUnit:
    """An item's context and one candidate, or the context alone for all; scored from positions first-1 .. end."""

    ids: tuple[int, ...]
    first: int  # index of the first scored token (== len(ids) for a unit that scores ``options``)
    item: int
    candidate: int  # -1: the unit scores every candidate of its item, each a single token
    options: tuple[int, ...] = ()  # those single tokens, in candidate order

    @property
    def logits_needed(self) -> int:
        return len(self.ids) - self.first + 1


@dataclass
class TaskData:
    """A task's items and their units (the candidates of an item are consecutive units)."""

    task: Task
    source: str  # the label of the set the items came from
    items: list[TaskItem]
    units: list[TaskUnit]
    notes: list[str] = field(default_factory=list)


def load_items(task: Task, source: Optional[str] = None, limit: int = 0, seed: int = 0,
               exclude: Optional[set[str]] = None) -> tuple[list[TaskItem], list[str]]:
    """Up to ``limit`` items (0: all; seeded order) of the task's set or ``source``, without ``exclude``.

    ``exclude`` holds whitespace-normalised prompts (a template's, say); rows whose prompt
    is among them are left out, and a note says how many.
    """
    label = source or task.source
    rows = [r for r in read_rows(PromptSource(label)) if isinstance(r, dict)]
    missing = [f for f in task.fields if not rows or f not in rows[0]]
    if missing:
        raise FnwebError(
            f"{label} has no labels for the {task.name} task: each row needs the fields "
            f"{', '.join(task.fields)} (missing: {', '.join(missing)}; fields seen: "
            f"{', '.join(sorted(rows[0])) if rows else '(no records)'})."
        )
    items = [_item(task, row, number, label) for number, row in enumerate(rows, start=1)]
    random.Random(seed).shuffle(items)
    kept = [item for item in items if not exclude or item.key not in exclude]
    notes = [f"{label}: {len(items) - len(kept)} of its {len(items)} items were used to build the template "
             "and were left out."] if len(kept) < len(items) else []
    if not kept:
        raise FnwebError(f"{label} has no {task.name} items left after leaving out the template's prompts.")
    return kept[: limit or None], notes


def _item(task: Task, row: dict, number: int, label: str) -> TaskItem:
    try:
        prompt, candidates, answer = task.to_item(row, task.prompt)
        key = " ".join(rows_to_pairs([row], label)[0].prompt.split())
    except (KeyError, TypeError, ValueError, FnwebError) as exc:
        reason = f"field {exc} is missing" if isinstance(exc, KeyError) else str(exc)
        raise FnwebError(f"{label}, item {number}: {reason}. Fix or remove that row.") from exc
    return TaskItem(prompt, candidates, answer, key)


def encode_units(tokenizer, items: Sequence[TaskItem], scoring: str = "choice", reply: str = "",
                 fmt: str = "auto") -> list[TaskUnit]:
    """The units of each item, in item order (an item's candidates in order)."""
    units = []
    for index, item in enumerate(items):
        split = [_context_and_answer(tokenizer, item.prompt, reply, c, fmt) for c in item.candidates]
        context = split[0][0]
        if scoring == "choice" and all(len(a) == 1 and c == context for c, a in split):
            units.append(TaskUnit(tuple(context), len(context), index, -1, tuple(a[0] for _, a in split)))
            continue
        units += [TaskUnit(tuple(c) + tuple(a), len(c), index, n) for n, (c, a) in enumerate(split)]
    return units


def _context_and_answer(tokenizer, prompt: str, reply: str, candidate: str, fmt: str) -> tuple[list[int], list[int]]:
    """(ids up to the candidate, its ids): the reply's given start is context; the end of turn is left out."""
    prompt_ids, response = encode_prompt_and_response(tokenizer, Pair(prompt, reply + candidate), fmt)
    eos = tokenizer.eos_token_id
    if eos in response:
        response = response[: response.index(eos)]
    given = 0
    if reply:  # the reply's own tokens, where they agree with the full reply's (a merged space stays with the answer)
        _, lead = encode_prompt_and_response(tokenizer, Pair(prompt, reply), fmt)
        while given < min(len(lead), len(response) - 1) and lead[given] == response[given]:
            given += 1
    return list(prompt_ids) + response[:given], response[given:]


def task_data(tokenizer, name: str, source: Optional[str] = None, limit: int = 0, seed: int = 0,
              exclude: Optional[set[str]] = None, fmt: str = "auto") -> TaskData:
    """A task's items (see ``load_items``) and their units, ready to measure."""
    task = get_task(name)
    items, notes = load_items(task, source, limit, seed, exclude)
    units = encode_units(tokenizer, items, task.scoring, task.reply, fmt)
    return TaskData(task, PromptSource(source or task.source).label(), items, units, notes)


# ---- measuring ---------------------------------------------------------------------------


def score_logits(logits: torch.Tensor, targets: torch.Tensor) -> CandidateScore:
    """The score of a candidate from the logits that predict its tokens: (P, vocab) and (P,)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return CandidateScore(float(picked.sum()), int(targets.numel()), bool((logp.argmax(-1) == targets).all()))


def score_unit(logits: torch.Tensor, unit: TaskUnit) -> list[CandidateScore]:
    """The scores of the candidates a unit covers, from its logits (logits_needed, vocab)."""
    if unit.options:
        logp = F.log_softmax(logits[0].float(), dim=-1)
        top = int(logp.argmax())
        return [CandidateScore(float(logp[t]), 1, top == t) for t in unit.options]
    targets = torch.tensor(unit.ids[unit.first :], device=logits.device)
    return [score_logits(logits[:-1], targets)]


def measure(model: torch.nn.Module, units: Sequence[TaskUnit], pad_id: int = 0, batch_size: int = 8,
            progress: ProgressFn = no_progress, stop: Optional[StopFlag] = None) -> list[CandidateScore]:
    """The model's score of every candidate, as it is (hooks included), in item then candidate order."""
    stop = stop or StopFlag()
    if batch_size < 1:
        raise FnwebError(f"Batch size must be at least 1 (got {batch_size}).")
    device = next(model.parameters()).device
    order = sorted(range(len(units)), key=lambda i: len(units[i].ids))
    per_unit: list[list[CandidateScore]] = [[] for _ in units]
    report = Progress("measuring", 0, len(units), "passes", "Scoring answers")
    progress(report)
    for start in range(0, len(order), batch_size):
        stop.check()
        chunk = order[start : start + batch_size]
        for i, scores in zip(chunk, _measure_batch(model, [units[i] for i in chunk], pad_id, device)):
            per_unit[i] = scores
        report.done = start + len(chunk)
        progress(report)
    return [score for scores in per_unit for score in scores]


def _measure_batch(model, batch: Sequence[TaskUnit], pad_id: int, device) -> list[list[CandidateScore]]:
    """One right-padded forward pass; only the positions that predict candidates reach the LM head."""
    longest = max(len(u.ids) for u in batch)
    ids = torch.tensor([list(u.ids) + [pad_id] * (longest - len(u.ids)) for u in batch])
    mask = torch.tensor([[1] * len(u.ids) + [0] * (longest - len(u.ids)) for u in batch])
    keep = longest - min(u.first for u in batch) + 1
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
                       logits_to_keep=keep).logits  # (rows, keep, vocab): positions longest-keep .. longest-1
    offset = longest - keep
    return [score_unit(logits[row, unit.first - 1 - offset : len(unit.ids) - offset], unit)
            for row, unit in enumerate(batch)]


# ---- accuracy ----------------------------------------------------------------------------


@dataclass
class TaskAccuracy:
    """How many items a model got right, beside what guessing would get."""

    task: str
    source: str
    accuracy: float  # share of the scored items answered right
    correct: int
    items: int  # items scored (every candidate measured)
    chance: float  # expected accuracy of guessing uniformly among the candidates
    majority: float  # best accuracy of always giving the same candidate position (0 for exact scoring)
    scoring: str
    length_norm: str
    per_item: list[bool] = field(default_factory=list)  # right or wrong, in item order
    chosen: list[int] = field(default_factory=list)  # candidate each item's answer went to (-1: none)

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy(data: TaskData, scores: Sequence[CandidateScore]) -> TaskAccuracy:
    """Accuracy from candidate scores (item then candidate order, as ``measure`` gives them).

    Items whose candidates are not all scored yet (a partial run) are left out.
    """
    task = data.task
    scoring = SCORINGS[task.scoring]
    per_item, chosen, n_scored = [], [], 0
    for item in data.items:
        n = len(item.candidates)
        if n_scored + n > len(scores):
            break
        right, pick = scoring.judge(scores[n_scored : n_scored + n], item.answer, task.length_norm)
        per_item.append(right)
        chosen.append(pick)
        n_scored += n
    scored = data.items[: len(per_item)]
    if not scored:
        raise FnwebError(f"No {task.name} item has been scored yet: every candidate of an item must be measured.")
    answers = [item.answer for item in scored]
    majority = max(answers.count(a) for a in set(answers)) / len(scored) if task.scoring == "choice" else 0.0
    return TaskAccuracy(
        task=task.name, source=data.source, accuracy=sum(per_item) / len(scored), correct=sum(per_item),
        items=len(scored), chance=float(np.mean([scoring.chance(len(i.candidates)) for i in scored])),
        majority=majority, scoring=task.scoring, length_norm=task.length_norm, per_item=per_item, chosen=chosen,
    )


def evaluate(lm, name: str, source: Optional[str] = None, limit: int = 0, seed: int = 0,
             exclude: Optional[set[str]] = None, fmt: str = "auto", batch_size: int = 8,
             progress: ProgressFn = no_progress, stop: Optional[StopFlag] = None) -> TaskAccuracy:
    """A loaded model's accuracy on a task, as the model is (no masks unless the caller applied them)."""
    data = task_data(lm.tokenizer, name, source, limit, seed, exclude, fmt)
    scores = measure(lm.model, data.units, lm.tokenizer.pad_token_id or 0, batch_size, progress, stop)
    return accuracy(data, scores)
