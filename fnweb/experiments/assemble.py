"""From an experiment's tallies to its result: each condition's metrics beside its random controls.

A condition's values are every per-token metric's mean over the held-out texts, the
change in cross-entropy from the unchanged model (``dce``) and the multiple-choice
accuracy; a row keeps those of ``LESION_METRICS`` (or ``CURVE_METRICS``) for the
network, their ``Stat`` over the random draws, and for effect sizes their ratio. A
snapshot taken before the end is marked partial, with a note of what it covers. It
knows nothing about models or how the passes ran.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from .. import __version__
from ..experiment_results import CURVE_METRICS, LESION_METRICS, CurvePoint, ExperimentResult, LesionRow, ratio
from ..masks import MaskSpec
from ..metrics import METRICS, stat_of
from ..templates import Template
from .measure import accuracy, token_means
from .plan import LESION, PRESERVE, Run, with_controls

IN_PROGRESS, STOPPED = "In progress", "Stopped by request"  # how a partial result's note begins


def values(run: Run, spec: Optional[MaskSpec], n_units: int, base_ce: float) -> dict[str, Optional[float]]:
    """Every metric of a condition over the first ``n_units`` units (held-out texts, then choices)."""
    means, _ = token_means(run, spec, n_units)
    return {**means, "dce": means["ce"] - base_ce, "acc": accuracy(run, spec, n_units)}


def _compared(run: Run, specs: list[MaskSpec], n_units: int, base_ce: float, keys: Sequence[str],
              network_only: Sequence[str] = ()) -> tuple[dict, dict, dict]:
    """(network values, Stats over the random draws, ratios) of ``specs`` = [network, *random draws]."""
    network = values(run, specs[0], n_units, base_ce)
    draws = [values(run, s, n_units, base_ce) for s in specs[1:]]
    random_ = {key: stat_of([d[key] for d in draws]) for key in keys}
    ratios = {key: ratio(network[key], random_[key].mean) for key in keys if METRICS[key].ratio}
    return {key: network[key] for key in (*network_only, *keys)}, random_, ratios


def order(run: Run) -> list[int]:
    """The components by their lesion's cross-entropy, strongest first."""
    effect = {c: token_means(run, MaskSpec((c,), LESION), run.n_text)[0]["ce"] for c in run.ids}
    return sorted(run.ids, key=lambda c: (-effect[c], c))


def _lesion_row(run: Run, name: str, ids: Sequence[int], n_units: int, base_ce: float) -> LesionRow:
    specs = with_controls(ids, LESION, run.config.draws, run.config.seed)
    network, random_, ratios = _compared(run, specs, n_units, base_ce, LESION_METRICS, network_only=("ce",))
    per_layer = {layer: len(ch) for layer, ch in run.template.neurons(ids).items()}
    densest = max(per_layer, key=lambda layer: (per_layer[layer], -layer), default=-1)
    return LesionRow(
        component=name, ids=list(ids), neurons=sum(per_layer.values()), share=run.shares[specs[0]],
        prompts=min(n_units, run.n_text), network=network, random=random_, ratio=ratios, densest_layer=densest,
        densest_share=per_layer.get(densest, 0) / run.width, stability=_stability(run.template, ids),
    )


def _stability(template: Template, ids: Sequence[int]) -> Optional[float]:
    """A single component's map stability, when its template's build recorded one."""
    recorded = template.stability()
    if recorded is None or len(ids) != 1 or not 0 <= ids[0] < len(recorded["correlation"]):
        return None
    return float(recorded["correlation"][ids[0]])


def _curve_point(run: Run, m: int, n_units: int) -> CurvePoint:
    specs = run.keeps(run.order[:m])
    network, random_, _ = _compared(run, specs, n_units, 0.0, CURVE_METRICS)
    return CurvePoint(m=m, ids=list(run.order[:m]), share_kept=run.shares[specs[0]],
                      prompts=min(n_units, run.n_text), network=network, random=random_)


def _settings(run: Run) -> dict:
    meta, config = run.template.meta, run.config
    return {
        "model_id": run.lm.model_id, "template": run.template.name, "template_model": meta.model_id if meta else None,
        "site": run.site, "k": len(run.template.components), "threshold": meta.threshold if meta else None,
        "threshold_value": meta.threshold_value if meta else None, "components": list(run.ids),
        "heldout": [s.label() for s in config.sources], "samples_per_dataset": config.samples_per_dataset,
        "draws": config.draws, "seed": config.seed, "max_tokens": config.max_tokens, "score": config.score,
        "exclude_template_prompts": config.exclude_template_prompts,
        "mcq": config.mcq.label() if config.mcq else None, "preserve_scope": config.preserve_scope,
        "fnweb_version": __version__,
    }


def _partial_note(run: Run, stopped: bool) -> str:
    n = len(run.units)
    lesion, curve = run.done.get(LESION, 0), run.done.get(PRESERVE, 0)
    head = STOPPED if stopped else IN_PROGRESS
    if lesion < n:
        return f"{head}: lesions measured on {lesion} of {n} prompts; the preservation curve was not reached."
    if run.config.curve and curve < n:
        return f"{head}: lesions complete; preservation curve measured on {curve} of {n} prompts."
    return f"{head}."


def assemble(run: Run, finished: bool, stopped: bool = False) -> ExperimentResult:
    """The result of what the run has measured so far."""
    n_lesion, n_curve = run.done.get(LESION, 0), run.done.get(PRESERVE, 0)
    base_ce = token_means(run, None, n_lesion)[0]["ce"] if n_lesion else float("nan")
    rows = [_lesion_row(run, str(c), (c,), n_lesion, base_ce) for c in run.ids] if n_lesion else []
    union = _lesion_row(run, "union", run.ids, n_lesion, base_ce) if n_lesion and run.union else None
    curve = [_curve_point(run, m, n_curve) for m in range(1, run.curve_len + 1)] if n_curve else []
    text_tokens = int(sum(len(u.ids) - u.first for u in run.units[: run.n_text]))
    return ExperimentResult(
        baseline_ce=base_ce if n_lesion else 0.0, rows=rows, union=union, curve=curve, settings=_settings(run),
        prompts=run.n_text, tokens=text_tokens, baseline_acc=accuracy(run, None, n_lesion),
        mcq_items=len(run.answers), partial=not finished, partial_note="" if finished else _partial_note(run, stopped),
        warnings=list(run.warnings), seconds=round(time.monotonic() - run.started, 2),
    )
