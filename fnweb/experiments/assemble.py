"""From an experiment's tallies to its result: each condition's metrics beside its random controls, and the tests.

A condition's values are every per-token metric's mean over the held-out texts, the
change in cross-entropy from the unchanged model (``dce``) and the task's accuracy; a
row keeps those of ``LESION_METRICS`` (or ``CURVE_METRICS``) for the network, their
``Stat`` over the random draws, and for effect sizes their ratio. A lesion row also
gets its tests (``fnweb.significance``): the permutation p-value of its change in
cross-entropy among its draws, Holm-adjusted across the components, and bootstrap
intervals over prompts (paired: every condition resampled alike) of the change and of
the change beyond the random mean, and over items of the accuracy. A snapshot taken
before the end is marked partial, with a note of what it covers. It knows nothing
about models or how the passes ran.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from .. import __version__
from ..evidence_results import DOSE_METRICS, DoseCurve, DosePoint
from ..experiment_results import CURVE_METRICS, LESION_METRICS, CurvePoint, ExperimentResult, LesionRow, ratio
from ..masks import MaskSpec, chosen_neurons
from ..metrics import METRICS, Stat, stat_of
from ..significance import BOOTSTRAPS, bootstrap_interval, holm, permutation_p, resample_weights
from ..templates import Template
from .measure import CE, TOKENS, task_accuracy, token_means, token_sums
from .plan import LESION, PRESERVE, Run
from .variants import Variant, dose_share_spec

IN_PROGRESS, STOPPED = "In progress", "Stopped by request"  # how a partial result's note begins


def measured_units(run: Run, phase: str) -> tuple[list[int], list[int]]:
    """(held-out texts, task units) the phase has measured so far."""
    done = run.phase_units(phase)[: run.done.get(phase, 0)]
    return [i for i in done if i < run.n_text], [i for i in done if i >= run.n_text]


def values(run: Run, spec: Optional[MaskSpec], texts: Sequence[int], tasks: Sequence[int],
           base_ce: float) -> dict[str, Optional[float]]:
    """Every metric of a condition over the measured texts and task units."""
    means, _ = token_means(run, spec, texts)
    measured = task_accuracy(run, spec, tasks)
    return {**means, "dce": means["ce"] - base_ce, "acc": measured.accuracy if measured else None}


def _compared(run: Run, specs: list[MaskSpec], units: tuple, base_ce: float, keys: Sequence[str],
              network_only: Sequence[str] = ()) -> tuple[dict, dict, dict]:
    """(network values, Stats over the random draws, ratios) of ``specs`` = [network, *random draws]."""
    network = values(run, specs[0], *units, base_ce)
    draws = [values(run, s, *units, base_ce) for s in specs[1:]]
    random_ = {key: stat_of([d[key] for d in draws]) for key in keys}
    ratios = {key: ratio(network[key], random_[key].mean) for key in keys if METRICS[key].ratio}
    return {key: network[key] for key in (*network_only, *keys)}, random_, ratios


def order(run: Run) -> list[int]:
    """The components by their lesion's cross-entropy on the ordering half of the texts, strongest first."""
    effect = {c: token_means(run, run.row_specs((c,))[0], run.order_units)[0]["ce"] for c in run.ids}
    return sorted(run.ids, key=lambda c: (-effect[c], c))


def _tests(run: Run, specs: list[MaskSpec], texts: list[int], tasks: list[int], weights: np.ndarray,
           network: dict, random_: dict) -> dict[str, Stat]:
    """The row's permutation p-value and bootstrap intervals (``excess``: the change beyond the random mean)."""
    base = token_sums(run, None, texts)
    tokens = base[:, TOKENS]
    changes = [token_sums(run, spec, texts)[:, CE] - base[:, CE] for spec in specs]  # per prompt, summed over tokens
    draw_effects = [float(c.sum() / max(tokens.sum(), 1.0)) for c in changes[1:]]
    excess = changes[0] - np.mean(changes[1:], axis=0)
    tests = {
        "dce": Stat(network["dce"], None, *bootstrap_interval(changes[0], tokens, weights)),
        "excess": Stat(network["dce"] - random_["dce"].mean, None, *bootstrap_interval(excess, tokens, weights)),
        "p": Stat(permutation_p(network["dce"], draw_effects, "higher")),
    }
    measured = task_accuracy(run, specs[0], tasks)
    if measured is not None:
        right = np.asarray(measured.per_item, dtype=np.float64)
        item_weights = resample_weights(len(right), run.config.seed, BOOTSTRAPS)
        tests["acc"] = Stat(measured.accuracy, None, *bootstrap_interval(right, np.ones_like(right), item_weights))
    return tests


def _lesion_row(run: Run, name: str, ids: Sequence[int], weights: np.ndarray, base_ce: float,
                variant: Optional[Variant] = None) -> LesionRow:
    specs = run.row_specs(ids) if variant is None else run.variant_specs(variant)
    texts, tasks = measured_units(run, LESION)
    network, random_, ratios = _compared(run, specs, (texts, tasks), base_ce, LESION_METRICS, network_only=("ce",))
    per_layer = {layer: len(ch) for layer, ch in chosen_neurons(run.template, specs[0]).items() if len(ch)}
    densest = max(per_layer, key=lambda layer: (per_layer[layer], -layer), default=-1)
    return LesionRow(
        component=name, ids=list(ids), neurons=sum(per_layer.values()), share=run.shares[specs[0]],
        prompts=len(texts), network=network, random=random_, ratio=ratios, densest_layer=densest,
        densest_share=per_layer.get(densest, 0) / run.width, stability=_stability(run.template, ids),
        tests=_tests(run, specs, texts, tasks, weights, network, random_),
        control=specs[1].control, massive=variant.massive if variant else run.config.massive,
        variant=variant.label if variant else "",
    )


def _dose(run: Run, base_ce: float) -> Optional[DoseCurve]:
    """The dose component at each factor, beside its twins of each control (None: no dose-response asked)."""
    if not run.dose_controls:
        return None
    texts, tasks = measured_units(run, LESION)
    points = []
    for alpha in run.config.dose_alphas:
        random_ = {}
        for control in run.dose_controls:
            network, random_[control], _ = _compared(run, run.dose_specs(alpha, control), (texts, tasks), base_ce,
                                                     DOSE_METRICS)
        points.append(DosePoint(alpha=alpha, network=network, random=random_))
    share = run.network_share(dose_share_spec(run.config))
    return DoseCurve(component=int(run.config.dose_component), share=share, draws=run.config.dose_draws,
                     prompts=len(texts), controls=list(run.dose_controls), points=points)


def _stability(template: Template, ids: Sequence[int]) -> Optional[float]:
    """A single component's map stability, when its template's build recorded one."""
    recorded = template.stability()
    if recorded is None or len(ids) != 1 or not 0 <= ids[0] < len(recorded["correlation"]):
        return None
    return float(recorded["correlation"][ids[0]])


def _curve_point(run: Run, m: int) -> CurvePoint:
    specs = run.keeps(run.order[:m])
    texts, tasks = measured_units(run, PRESERVE)
    network, random_, _ = _compared(run, specs, (texts, tasks), 0.0, CURVE_METRICS)
    return CurvePoint(m=m, ids=list(run.order[:m]), share_kept=run.shares[specs[0]],
                      prompts=len(texts), network=network, random=random_)


def _settings(run: Run) -> dict:
    meta, config = run.template.meta, run.config
    return {
        "model_id": run.lm.model_id, "template": run.template.name, "template_model": meta.model_id if meta else None,
        "template_seed": meta.seed if meta else None,
        "site": run.site, "k": len(run.template.components), "threshold": meta.threshold if meta else None,
        "threshold_value": meta.threshold_value if meta else None, "components": list(run.ids),
        "heldout": [s.label() for s in config.sources], "samples_per_dataset": config.samples_per_dataset,
        "draws": config.draws, "seed": config.seed, "draw_stream": run.stream, "max_tokens": config.max_tokens,
        "score": config.score,
        "exclude_template_prompts": config.exclude_template_prompts, "level": config.level,
        "bootstraps": BOOTSTRAPS, "order_prompts": len(run.order_units), "curve_prompts": len(run.score_units),
        "task": config.task, "task_source": run.task.source if run.task else None,
        "task_items": len(run.task.items) if run.task else 0, "fnweb_version": __version__,
        "intervention": config.intervention, "alpha": config.alpha, "control": config.control,
        "massive": config.massive, "also_control": config.also_control,
        "massive_channels": [list(x) for x in run.template.stats.massive] if run.template.stats else None,
        "preserve_scope": config.preserve_scope,
    }


def _partial_note(run: Run, stopped: bool) -> str:
    lesion, curve = run.done.get(LESION, 0), run.done.get(PRESERVE, 0)
    n_lesion, n_curve = len(run.phase_units(LESION)), len(run.phase_units(PRESERVE))
    head = STOPPED if stopped else IN_PROGRESS
    if lesion < n_lesion:
        return (f"{head}: lesions measured on {lesion} of {n_lesion} units (prompts, then task items); "
                "the preservation curve was not reached.")
    if run.config.curve and curve < n_curve:
        return f"{head}: lesions complete; preservation curve measured on {curve} of {n_curve} units."
    return f"{head}."


def _task_summary(run: Run, tasks: list[int]) -> Optional[dict]:
    measured = task_accuracy(run, None, tasks)
    if measured is None:
        return None
    return {"name": measured.task, "source": measured.source, "items": measured.items, "chance": measured.chance,
            "majority": measured.majority, "scoring": measured.scoring}


def assemble(run: Run, finished: bool, stopped: bool = False) -> ExperimentResult:
    """The result of what the run has measured so far."""
    texts, tasks = measured_units(run, LESION)
    base_ce = token_means(run, None, texts)[0]["ce"] if texts else float("nan")
    weights = resample_weights(max(len(texts), 1), run.config.seed, BOOTSTRAPS)  # one set of resamples: paired rows
    rows = [_lesion_row(run, str(c), (c,), weights, base_ce) for c in run.ids] if texts else []
    for row, adjusted in zip(rows, holm([r.tests["p"].mean for r in rows])):
        row.tests["p_holm"] = Stat(adjusted)
    union = _lesion_row(run, "union", run.ids, weights, base_ce) if texts and run.union else None
    variants = [_lesion_row(run, str(v.component), (v.component,), weights, base_ce, v) for v in run.variants
                ] if texts else []
    for label in dict.fromkeys(v.variant for v in variants):  # Holm within each family of variant rows
        family = [v for v in variants if v.variant == label]
        for row, adjusted in zip(family, holm([r.tests["p"].mean for r in family])):
            row.tests["p_holm"] = Stat(adjusted)
    curve = [_curve_point(run, m) for m in range(1, run.curve_len + 1)] if run.done.get(PRESERVE) else []
    baseline = task_accuracy(run, None, tasks)
    return ExperimentResult(
        baseline_ce=base_ce if texts else 0.0, rows=rows, union=union, curve=curve, settings=_settings(run),
        prompts=run.n_text, tokens=int(sum(len(u.ids) - u.first for u in run.units[: run.n_text])),
        baseline_acc=baseline.accuracy if baseline else None, task=_task_summary(run, tasks), variants=variants,
        dose=_dose(run, base_ce) if texts else None,
        partial=not finished, partial_note="" if finished else _partial_note(run, stopped),
        warnings=list(run.warnings), seconds=round(time.monotonic() - run.started, 2),
    )
