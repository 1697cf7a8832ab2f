"""Side-by-side generation: baseline, each intervention (lesion, preserve, mean, scale) and matched random controls.

All columns run as rows of one batch, each row with its own mask (a ``(rows, 1,
width)`` mask broadcasts over positions), so they fill together as tokens stream and
share one KV-cached loop. Each row samples with its own generator seeded alike, so
with sampling too the differences come from the mask alone. After generation, one
teacher-forced pass of the baseline's continuation through every row gives the
numbers: every per-token metric of ``fnweb.metrics`` (mean next-token KL from the
baseline, the continuation's cross-entropy, top-1 agreement), and where each column's
text departs from the baseline's.

The random control runs several seeded draws for each intervention shown (lesion:
the ``random`` column; preserve: ``random-preserve``, keeping as many random neurons),
drawn as ``settings.control`` says (per layer, or per layer and magnitude): its column
shows the first draw's text (the others' in ``draw_texts``) and the mean and spread of
the draws' numbers. ``RANDOM_OF`` maps a control column to its intervention. Columns
follow ``fnweb.interventions.INTERVENTIONS``; one whose intervention takes a factor uses
``settings.alpha``. ``model_column_stream`` adds a
column from another model (a fine-tuned run with its mask) after the batched ones,
generated and scored the same way. It knows nothing about the UI.

Streaming scales to long generations: the comparison yielded after each token holds a
copy of the rows' tokens and decodes its texts only when its columns are first read
(``StreamedComparison``), so a reader that looks a few times a second (the app) pays for
a few decodes a second, not one per token and row; the masked shares are computed once.
A Stop ends generation at the next token: the comparison so far is yielded at once
(``stopped`` set, not yet scored), then scored over the tokens generated (metrics after a
Stop), the last one ``done`` and ``stopped``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager, Iterator, Optional, Sequence

import torch

from .archs import DEFAULT_SITE, layout_of
from .checks import check_seed
from .controls import CONTROLS, DEFAULT_CONTROL, check_choice, draw_seed
from .errors import FnwebError
from .interventions import DEFAULT_INTERVENTION, INTERVENTIONS, check_alpha
from .masks import (
    DEFAULT_PRESERVE_SCOPE,
    MaskSpec,
    apply_masks,
    check_preserve_scope,
    layer_masks,
    masked_share,
    stacked_masks,
)
from .metrics import TOKEN_METRICS, Stat, next_token_stats, stat_of
from .models import LoadedModel
from .progress import StopFlag
from .prompts import Pair, encode_pair
from .templates import Template

BASELINE, RANDOM = "baseline", "random"
COLUMNS = (BASELINE, *INTERVENTIONS, RANDOM)  # the unchanged model, one column per intervention, the random control
# Shown unless asked otherwise: the interventions that need neither a factor nor the template's statistics.
DEFAULT_COLUMNS = (BASELINE, *(n for n, i in INTERVENTIONS.items() if not (i.takes_alpha or i.needs_stats)), RANDOM)
CONTROL_OF = DEFAULT_INTERVENTION  # the intervention the random column applies to random neurons, by default
DEFAULT_ALPHA = 2.0  # the scale column's factor unless chosen: amplified twice
# Each intervention's random control column: "random" for the default one (lesion), "random-<name>" for the others.
RANDOM_OF = {(RANDOM if name == CONTROL_OF else f"{RANDOM}-{name}"): name for name in INTERVENTIONS}
CONTROL_COLUMN = {name: column for column, name in RANDOM_OF.items()}


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    greedy: bool = True
    temperature: float = 0.8  # used when not greedy
    seed: int = 0  # re-applied for every column
    random_draws: int = 3  # seeded draws of the random control
    alpha: float = DEFAULT_ALPHA  # the factor of the columns whose intervention takes one (scale)
    control_of: str = CONTROL_OF  # the intervention the random column applies (a name in INTERVENTIONS)
    control: str = DEFAULT_CONTROL  # how its neurons are drawn (a name in fnweb.controls.CONTROLS)
    preserve_scope: str = DEFAULT_PRESERVE_SCOPE  # fnweb.masks.PRESERVE_SCOPES: the preserve column's layers

    def validate(self) -> None:
        check_preserve_scope(self.preserve_scope)
        check_seed(self.seed)
        if not 1 <= self.max_new_tokens <= 1024:
            raise FnwebError(f"Max new tokens must lie between 1 and 1024 (got {self.max_new_tokens}).")
        if not self.greedy and not 0.05 <= self.temperature <= 5.0:
            raise FnwebError(f"Temperature must lie between 0.05 and 5 (got {self.temperature}).")
        if not 1 <= self.random_draws <= 20:
            raise FnwebError(f"Random draws must lie between 1 and 20 (got {self.random_draws}).")
        self.alpha = check_alpha(self.alpha)
        check_choice(self.control_of, INTERVENTIONS, "intervention for the random column")
        check_choice(self.control, CONTROLS, "control")


@dataclass
class Row:
    """One generated row: a column, or one draw of the random control."""

    column: str
    spec: Optional[MaskSpec]
    tokens: list[int] = field(default_factory=list)
    finished: bool = False


@dataclass
class ColumnResult:
    name: str  # one of COLUMNS, or an extra column ("run")
    label: str  # what was masked, for people
    text: str
    tokens: list[int]
    masked_share: float  # share of the site's channels the mask changes
    departs_at: Optional[int] = None  # index of the first token that differs from the baseline
    metrics: dict[str, Stat] = field(default_factory=dict)  # per-token metric -> mean (and sd over draws)
    prefix: str = ""  # text before the departure
    rest: str = ""  # text from the departure on
    scored: int = 0  # tokens of the baseline's continuation the metrics are over
    draws: int = 1  # rows behind the numbers (the random control's draws)
    draw_texts: list[str] = field(default_factory=list)  # the texts of the other draws (a random control's 2nd, ...)


@dataclass
class Comparison:
    prompt: str
    columns: list[ColumnResult]
    done: bool = False
    step: int = 0
    stopped: bool = False  # a Stop ended generation early: the columns (and numbers) cover the tokens made so far


class StreamedComparison(Comparison):
    """A comparison during generation, whose texts are decoded when its columns are first read."""

    def __init__(self, prompt: str, make: Callable[[], list[ColumnResult]], step: int) -> None:
        self.prompt, self.done, self.step, self.stopped = prompt, False, step, False
        self._make, self._made = make, None

    @property
    def columns(self) -> list[ColumnResult]:
        if self._made is None:
            self._made = self._make()
        return self._made


def plan_rows(template: Optional[Template], components: Sequence[int], columns: Sequence[str],
              settings: GenerationSettings) -> list[Row]:
    """The rows to generate for the chosen columns (the baseline is always row 0)."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise FnwebError(f"Unknown column {unknown[0]!r}; choose from {', '.join(COLUMNS)}.")
    masked_columns = [c for c in columns if c != BASELINE]
    if masked_columns and template is None:
        raise FnwebError(f"The {', '.join(COLUMNS[1:])} columns need a template: build or upload one first.")
    if masked_columns and not components:
        raise FnwebError(f"Choose at least one component to {' or '.join(INTERVENTIONS)}.")
    components = tuple(template.check_components(components)) if masked_columns else ()
    rows = [Row(BASELINE, None)]
    # random alone: the chosen intervention's control
    controlled = [c for c in masked_columns if c in INTERVENTIONS] or [settings.control_of]
    for column in masked_columns:
        if column == RANDOM:  # a matched control for every intervention shown, each with its own draws
            rows += [Row(CONTROL_COLUMN[name], MaskSpec(components, name, random_seed=draw_seed(settings.seed, draw),
                                                        control=settings.control, alpha=settings.alpha,
                                                        preserve_scope=settings.preserve_scope))
                     for name in controlled for draw in range(settings.random_draws)]
        else:
            rows.append(Row(column, MaskSpec(components, column, alpha=settings.alpha,
                                             preserve_scope=settings.preserve_scope)))
    return rows


def _pick(logits: torch.Tensor, settings: GenerationSettings, generators: list) -> torch.Tensor:
    if settings.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    return torch.stack([torch.multinomial(probs[r], 1, generator=g)[0] for r, g in enumerate(generators)])


def _shares(template, rows: list[Row], site_width: int, n_layers: int) -> dict[str, float]:
    """Per column: the share of the site's channels its (first) row's mask changes."""
    firsts = {r.column: r for r in reversed(rows)}
    return {name: masked_share(layer_masks(template, row.spec), n_layers, site_width) if row.spec else 0.0
            for name, row in firsts.items()}


def _columns(lm: LoadedModel, rows: list[Row], shares: dict[str, float]) -> list[ColumnResult]:
    """Column results from rows (metrics filled in later)."""
    results = []
    for name in dict.fromkeys(r.column for r in rows):
        row, *others = [r for r in rows if r.column == name]
        label = row.spec.label() if row.spec else "unchanged model"
        result = _result(lm.tokenizer, name, label, row, shares[name], rows[0])
        result.draws = 1 + len(others)
        result.draw_texts = [lm.tokenizer.decode(other.tokens, skip_special_tokens=True) for other in others]
        results.append(result)
    return results


def _snapshot(rows: list[Row]) -> list[Row]:
    """The rows as they are now (tokens copied): what a streamed comparison decodes later."""
    return [Row(r.column, r.spec, list(r.tokens), r.finished) for r in rows]


def _result(tokenizer, name: str, label: str, row: Row, share: float, base: Row) -> ColumnResult:
    """One column's text, split where it departs from the baseline's."""
    departs = next((i for i, (a, b) in enumerate(zip(base.tokens, row.tokens)) if a != b), None)
    if departs is None and len(base.tokens) != len(row.tokens) and base.finished and row.finished:
        departs = min(len(base.tokens), len(row.tokens))
    split = departs if departs is not None else len(row.tokens)
    return ColumnResult(
        name=name, label=label, text=tokenizer.decode(row.tokens, skip_special_tokens=True), tokens=list(row.tokens),
        masked_share=share, departs_at=departs,
        prefix=tokenizer.decode(row.tokens[:split], skip_special_tokens=True),
        rest=tokenizer.decode(row.tokens[split:], skip_special_tokens=True),
    )


def compare_stream(
    lm: LoadedModel,
    prompt: str,
    template: Optional[Template],
    components: Sequence[int],
    columns: Sequence[str] = DEFAULT_COLUMNS,
    settings: Optional[GenerationSettings] = None,
    stop: Optional[StopFlag] = None,
) -> Iterator[Comparison]:
    """Yield the comparison after every generated token; the last one has the metrics."""
    settings = settings or GenerationSettings()
    settings.validate()
    stop = stop or StopFlag()
    if not prompt or not prompt.strip():
        raise FnwebError("The prompt is empty: type a prompt or pick an example.")
    rows = plan_rows(template, components, columns, settings)
    layout = layout_of(lm.model)
    site = template.infer_site(layout) if template is not None else DEFAULT_SITE
    if template is not None:
        template.check_fits(layout, lm.model_id)
    width = layout.width(site)
    prompt_ids = encode_pair(lm.tokenizer, Pair(prompt.strip()), with_response=False)
    masks = stacked_masks(template, [r.spec for r in rows]) if template is not None else {}
    eos = lm.tokenizer.eos_token_id
    device = lm.device
    generators = [torch.Generator().manual_seed(settings.seed) for _ in rows]
    shares = _shares(template, rows, width, layout.n_layers)
    with torch.inference_mode(), apply_masks(lm.model, masks, site):
        current = torch.tensor([prompt_ids] * len(rows), device=device)
        past = None
        for step in range(settings.max_new_tokens):
            if stop.is_set:
                break  # what was generated is still scored below
            out = lm.model(input_ids=current, past_key_values=past, use_cache=True)
            past = out.past_key_values
            chosen = _pick(out.logits[:, -1, :].to("cpu"), settings, generators)
            for row, token in zip(rows, chosen.tolist()):
                if not row.finished:
                    row.tokens.append(token)
                    row.finished = token == eos
            rows_now = _snapshot(rows)
            yield StreamedComparison(prompt, lambda rows_now=rows_now: _columns(lm, rows_now, shares), step + 1)
            if all(r.finished for r in rows):
                break
            current = chosen.unsqueeze(1).to(device)
        stopped = stop.is_set
        final = _columns(lm, rows, shares)
        if stopped:  # shown at once; the scoring pass takes a moment
            yield Comparison(prompt, [replace(c) for c in final], step=len(rows[0].tokens), stopped=True)
        _score(lm, rows, final, prompt_ids)
    yield Comparison(prompt, final, done=True, step=len(rows[0].tokens), stopped=stopped)


def _score(lm: LoadedModel, rows: list[Row], results: list[ColumnResult], prompt_ids: list[int]) -> None:
    """Teacher-force the baseline's continuation through every row (masks are active); nothing to score: no
    numbers."""
    continuation = rows[0].tokens
    if not continuation:
        return
    ids = torch.tensor([prompt_ids + continuation] * len(rows), device=lm.device)
    logits = lm.model(input_ids=ids, use_cache=False).logits[:, len(prompt_ids) - 1 : -1].float().cpu()
    targets = torch.tensor(continuation).expand(len(rows), -1)
    per_row = [next_token_stats(logits[0], logits[r], targets[r]) for r in range(len(rows))]
    for result in results:
        stats = [s for s, row in zip(per_row, rows) if row.column == result.name]
        result.metrics = {key: stat_of([s[key] for s in stats], spread_of_one=False) for key in TOKEN_METRICS}
        result.scored, result.draws = stats[0]["tokens"], len(stats)


def model_column_stream(
    lm: LoadedModel,
    comparison: Comparison,
    other: LoadedModel,
    name: str,
    label: str,
    settings: Optional[GenerationSettings] = None,
    stop: Optional[StopFlag] = None,
    context: Callable[[], ContextManager] = nullcontext,
    share: float = 0.0,
) -> Iterator[Comparison]:
    """Add a column that ``other`` generates (e.g. a fine-tuned run, under its mask) to a finished comparison.

    Same prompt, same decoding and seed as the other columns, streamed token by token;
    then the baseline's continuation is teacher-forced through ``other`` (inside
    ``context``, e.g. the run's mask) and scored against ``lm`` unchanged, as the
    batched columns are. ``other`` must share ``lm``'s tokenizer.
    """
    settings = settings or GenerationSettings()
    settings.validate()
    stop = stop or StopFlag()
    base = comparison.columns[0]
    if base.name != BASELINE:
        raise FnwebError("An extra column is compared with the baseline: the comparison has none.")
    prompt_ids = encode_pair(lm.tokenizer, Pair(comparison.prompt.strip()), with_response=False)
    base_row = Row(BASELINE, None, list(base.tokens), finished=True)
    row, eos = Row(name, None), lm.tokenizer.eos_token_id
    generator = torch.Generator().manual_seed(settings.seed)  # the batched rows are seeded alike
    columns = list(comparison.columns)
    with torch.inference_mode(), context():
        current, past = torch.tensor([prompt_ids], device=other.device), None
        for _ in range(settings.max_new_tokens):
            if stop.is_set:
                break  # scored over what it generated, as the batched columns are
            out = other.model(input_ids=current, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(_pick(out.logits[:, -1, :].to("cpu"), settings, [generator])[0])
            row.tokens.append(token)
            row.finished = token == eos
            now = _snapshot([row])[0]
            yield StreamedComparison(
                comparison.prompt, lambda now=now: columns + [_result(lm.tokenizer, name, label, now, share, base_row)],
                len(row.tokens))
            if row.finished:
                break
            current = torch.tensor([[token]], device=other.device)
        ids = torch.tensor([prompt_ids + base.tokens])
        logits = other.model(input_ids=ids.to(other.device), use_cache=False).logits
    with torch.inference_mode():
        base_logits = lm.model(input_ids=ids.to(lm.device), use_cache=False).logits
    span = slice(len(prompt_ids) - 1, ids.shape[1] - 1)
    result = _result(lm.tokenizer, name, label, row, share, base_row)
    stats = next_token_stats(base_logits[0, span].float().cpu(), logits[0, span].float().cpu(),
                             torch.tensor(base.tokens))
    result.metrics, result.scored = {key: Stat(stats[key]) for key in TOKEN_METRICS}, stats["tokens"]
    yield Comparison(comparison.prompt, columns + [result], done=True, step=comparison.step,
                     stopped=comparison.stopped or stop.is_set)


def compare(lm, prompt, template, components, columns=DEFAULT_COLUMNS, settings=None, stop=None) -> Comparison:
    """The finished comparison (``compare_stream`` without the intermediate states)."""
    last = None
    for state in compare_stream(lm, prompt, template, components, columns, settings, stop):
        last = state
    return last
