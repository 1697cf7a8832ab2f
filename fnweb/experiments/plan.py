"""What an experiment runs: the conditions of each phase, in chunks of rows per forward pass, and the run's state.

A condition is a ``MaskSpec``: a component (or several) lesioned (or mean-ablated, or
scaled: the config's intervention) or kept, or one of ``draws`` seeded random controls of
the same per-layer sizes (drawn as the config's control says); the lesion phase also
holds the variant rows' and the dose-response's conditions (``variants``). ``prepare`` checks the
inputs (the template fits the model, the components can each have a random control),
reads the held-out units and sizes the passes; it returns the ``Run`` that measuring
fills. Components whose random control cannot be drawn (they take over half of a
layer) are left out with a note. It knows nothing about how a pass is measured.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..archs import layout_of, unwrap
from ..controls import draw_seed
from ..errors import FnwebError
from ..interventions import INTERVENTIONS
from ..masks import MaskSpec, layer_masks, masked_share, stacked_masks
from ..models import LoadedModel
from ..progress import Progress, ProgressFn
from ..tasks import TaskData
from ..templates import Template
from .config import ExperimentConfig
from .heldout import Unit, split_units, task_units, template_prompts, text_units
from .variants import DOSE, Variant, check_statistics, dose_controls, plan_variants, spill_notes

LOGIT_BYTES = 512 * 2**20  # float32 logits held per forward pass
LESION, PRESERVE = INTERVENTIONS["lesion"].name, INTERVENTIONS["preserve"].name  # the two phases' interventions


def with_controls(ids: Sequence[int], mode: str, draws: int, seed: int, stream: int = 0, **fields) -> list[MaskSpec]:
    """The components' mask, then ``draws`` random masks of the same per-layer sizes.

    ``draw_seed`` (fnweb.controls) gives draw d its seed: no two (seed, stream, draw) share
    one, so experiments with seeds s and s + 1 share no draw, nor do experiments on
    templates of different build seeds. ``fields``: the masks' other ``MaskSpec`` fields
    (control, massive, alpha, preserve_scope).
    """
    ids = tuple(ids)
    return [MaskSpec(ids, mode, **fields)] + [MaskSpec(ids, mode, random_seed=draw_seed(seed, d, stream), **fields)
                                              for d in range(draws)]


@dataclass
class Phase:
    name: str  # the intervention: lesion | preserve
    label: str  # for progress messages
    chunks: list[list[Optional[MaskSpec]]]  # rows of each forward pass; None = unchanged model
    masks: list[dict]  # stacked masks of each chunk
    units: list[int]  # the units it measures, in order (indices into Run.units)


def make_phase(name: str, label: str, template: Template, specs: list[MaskSpec], rows: int,
               units: list[int]) -> Phase:
    """Chunks of at most ``rows`` rows, the unchanged model first (every mask built now, so bad ones fail early)."""
    ordered: list[Optional[MaskSpec]] = [None] + list(dict.fromkeys(specs))
    chunks = [ordered[i : i + rows] for i in range(0, len(ordered), rows)]
    return Phase(name, label, chunks, [stacked_masks(template, chunk) for chunk in chunks], units)


@dataclass
class Run:
    """Everything one experiment needs and has measured so far."""

    lm: LoadedModel
    template: Template
    config: ExperimentConfig
    site: str
    ids: list[int]  # the components studied
    units: list  # held-out texts (Unit) first, then the task's units (TaskUnit)
    n_text: int
    task: Optional[TaskData]  # the labelled task whose units follow the texts
    order_units: list[int]  # texts that decide the preservation curve's order...
    score_units: list[int]  # ...and the disjoint texts it is scored on
    rows_per_pass: int
    n_layers: int
    width: int  # channels per layer at the site
    warnings: list[str]
    tally: dict = field(default_factory=dict)  # spec (None: unchanged) -> (units, metrics + 1): sums, then tokens
    scores: dict = field(default_factory=dict)  # spec -> task unit index -> its candidates' CandidateScores
    done: dict = field(default_factory=dict)  # phase name -> units measured
    shares: dict = field(default_factory=dict)  # spec -> share of channels selected / kept
    union: bool = True  # the union's random control fits (see controllable)
    order: list[int] = field(default_factory=list)  # components by lesion effect on order_units, strongest first
    curve_len: int = 0  # points of the preservation curve whose random keeps fit
    variants: list[Variant] = field(default_factory=list)  # the components' variant rows
    dose_controls: list[str] = field(default_factory=list)  # the dose-response's controls (none: no dose-response)
    started: float = field(default_factory=time.monotonic)

    @property
    def stream(self) -> int:
        """The draws' stream: the template's build seed (templates of other seeds draw other controls)."""
        return int(self.template.meta.seed or 0) if self.template.meta else 0

    def row_specs(self, ids: Sequence[int], control: Optional[str] = None, massive: Optional[str] = None
                  ) -> list[MaskSpec]:
        """A row's condition (the config's intervention) and its random twins (the config's control, or another)."""
        config = self.config
        return with_controls(ids, config.intervention, config.draws, config.seed, self.stream, alpha=config.alpha,
                             control=control or config.control, massive=massive or config.massive)

    def variant_specs(self, variant: Variant) -> list[MaskSpec]:
        return self.row_specs((variant.component,), variant.control, variant.massive)

    def dose_specs(self, alpha: float, control: str) -> list[MaskSpec]:
        """The dose component multiplied by ``alpha``, and its twins drawn by ``control``."""
        config = self.config
        return with_controls((config.dose_component,), DOSE, config.dose_draws, config.seed, self.stream,
                             alpha=alpha, control=control, massive=config.massive)

    def lesion_specs(self) -> list[MaskSpec]:
        specs = [s for c in self.ids for s in self.row_specs((c,))]
        specs += self.row_specs(self.ids) if self.union else []
        specs += [s for variant in self.variants for s in self.variant_specs(variant)]
        return specs + [s for alpha in self.config.dose_alphas for control in self.dose_controls
                        for s in self.dose_specs(alpha, control)]

    def preserve_specs(self) -> list[MaskSpec]:
        return [s for m in range(1, self.curve_len + 1) for s in self.keeps(self.order[:m])]

    def keeps(self, ids: Sequence[int]) -> list[MaskSpec]:
        """The preserve condition of ``ids`` and its random keeps (in the config's preserve scope)."""
        return with_controls(ids, PRESERVE, self.config.draws, self.config.seed, self.stream,
                             preserve_scope=self.config.preserve_scope)

    @property
    def total_channels(self) -> int:
        return self.n_layers * self.width

    def chunks_for(self, n_specs: int) -> int:
        return math.ceil((n_specs + 1) / self.rows_per_pass)

    @property
    def task_units(self) -> list[int]:
        return list(range(self.n_text, len(self.units)))

    def phase_units(self, name: str) -> list[int]:
        """The units a phase measures: every one for the lesions; for the curve, its scoring half and the task."""
        return list(range(len(self.units))) if name == LESION else self.score_units + self.task_units

    def phase(self, name: str, label: str, specs: list[MaskSpec]) -> Phase:
        """The phase's passes; each condition's share of channels is noted for the result."""
        for spec in specs:
            self.shares.setdefault(spec, self.network_share(spec))
        return make_phase(name, label, self.template, specs, self.rows_per_pass, self.phase_units(name))

    def network_share(self, spec: MaskSpec) -> float:
        """The share of the site's channels that is the condition's network: those lesioned, or those kept."""
        changed = masked_share(layer_masks(self.template, spec), self.n_layers, self.width)
        return INTERVENTIONS[spec.mode].network_share(changed)


def _vocab_size(model) -> int:
    head = unwrap(model).get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(unwrap(model).config.vocab_size)


def _rows_per_pass(lm: LoadedModel, units: list[Unit], batch_tokens: int) -> int:
    """Rows per forward pass: within ``batch_tokens`` and the logits' memory budget."""
    longest = max(len(u.ids) for u in units)
    scored = max(len(u.ids) - u.first + 1 for u in units)
    return max(1, min(batch_tokens // longest, LOGIT_BYTES // (4 * scored * _vocab_size(lm.model))))


def prepare(lm: LoadedModel, template: Template, config: ExperimentConfig, progress: ProgressFn,
            exclude: Optional[set[str]] = None) -> Run:
    """Check everything and read the held-out units (without ``exclude``'s prompts): the run, before any measuring."""
    config.validate()
    layout = layout_of(lm.model)
    warnings = [w for w in [template.check_fits(layout, lm.model_id)] if w]
    ids = template.check_components(config.components) if config.components else template.component_ids
    if not ids:
        raise FnwebError("This template has no components to test.")
    check_statistics(template, config)  # before the controls are drawn: a rebuild, not "left out", is the answer
    twins = dict(control=config.control, massive=config.massive)
    ids, skipped = _controllable_ids(template, ids, config.seed, twins)
    union = len(ids) > 1 and controllable(template, ids, config.seed, **twins) is None
    if len(ids) > 1 and not union:
        skipped.append("The union of all components leaves too few channels outside it in some layer for a random "
                       "control: it has no row, and the preservation curve stops where its random keeps stop fitting.")
    progress(Progress("loading", 0, 1, "", "Reading held-out prompts"))
    used, notes = template_prompts(template)
    if exclude:
        used = (used or set()) | exclude
    units, text_notes = text_units(lm, config, used)
    n_text, task = len(units), None
    if config.task is not None:
        task, task_notes = task_units(lm.tokenizer, config, used)
        units, text_notes = units + list(task.units), text_notes + task_notes
    order_units, score_units = split_units(n_text)
    site = template.infer_site(layout)
    run = Run(lm, template, config, site, list(ids), units, n_text, task, order_units, score_units,
              _rows_per_pass(lm, units, config.batch_tokens), layout.n_layers, layout.width(site),
              warnings + skipped + notes + text_notes, union=union)
    _add_evidence(run)
    return run


def _add_evidence(run: Run) -> None:
    """The run's variant rows and dose-response controls, with notes on what was left out or drawn nearby."""
    variants, notes = plan_variants(run.template, run.config, run.ids)
    run.variants = [v for v in variants if controllable(run.template, (v.component,), run.config.seed,
                                                         control=v.control, massive=v.massive) is None]
    run.dose_controls, dose_notes = dose_controls(run.template, run.config)
    firsts = [run.row_specs((c,))[1] for c in run.ids] + [run.variant_specs(v)[1] for v in run.variants]
    run.warnings += notes + dose_notes + spill_notes(run.template, firsts)


def controllable(template: Template, ids: Sequence[int], seed: int, **twins) -> Optional[str]:
    """None when a random control of these components (drawn as ``twins`` says) can be drawn, else why not."""
    try:
        layer_masks(template, MaskSpec(tuple(ids), LESION, random_seed=seed, **twins))
    except FnwebError as exc:
        return str(exc)
    return None


def _controllable_ids(template: Template, ids: Sequence[int], seed: int,
                      twins: dict) -> tuple[list[int], list[str]]:
    """The components whose random control fits, and a note for each one left out."""
    kept, notes = [], []
    for c in ids:
        why = controllable(template, (c,), seed, **twins)
        if why is None:
            kept.append(c)
        else:
            notes.append(f"Component {c} was left out: {why.split(':')[0]}: no random control of the same size "
                         "can be drawn from the rest of that layer.")
    if not kept:
        raise FnwebError("No component can be compared with a random control: each takes over half of some "
                         "layer's channels. Build the template with a stricter threshold.")
    return kept, notes
