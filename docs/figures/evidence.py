"""The README's evidence on the embedded model: template seeds, both controls, outliers, recurrence, task accuracy.

    PYTHONPATH=. nice python docs/figures/evidence.py [--output docs/evidence] [--seeds 3] [--draws 11]

For each site (``neurons`` at the 98th percentile, fnweb's default; ``mlp_output`` at
z > 1.96, the paper's), with the README's template settings (five built-in sets, 20
prompts each, 128 tokens, k = 10, build seed 0):

1. **Template seeds** (``fnweb.template_seeds``): the template built with seeds 0, 1, 2,
   components matched to seed 0's by map correlation; on each seed the components of
   ``CANDIDATES`` lesioned on the same held-out prompts against random twins matched on
   layer **and magnitude** (the main control, so Fisher across seeds and Holm across
   components test against it), beside a variant row against the per-layer control and
   one without the component's massive-activation channels.
2. **Task accuracy and the dose-response** (seed 0's template): the strongest candidate
   lesioned on the sentiment task, scaled by alpha from 0 to 2.
3. **Recurrence** (seed 0's template): per-sample ICA (k = 10) on held-out prompts, each
   template component's share of samples with IoU > 0.2 beside its random twins; once with
   the chat template (as built) and once with the plain format (no system prompt), to see
   what a component that recurs everywhere is made of.

Why only some components: a permutation test of all ten components at both sites, on
three seeds and two controls, is tens of thousands of forward rows: hours on a 2-core CPU.
``CANDIDATES`` are the components that stood out, and the runner-up, in the README's
earlier ten-component runs (docs/figures/embedded_*.json, other prompts and draws); the
other components were within their controls there. The Holm family is these two per site.

Writes ``<site>_seeds.json/.csv``, ``<site>_task_dose.json`` (with its ``_components``,
``_curve`` and ``_dose`` CSVs), ``<site>_recurrence_{auto,basic}.json/.csv`` and
``evidence.json`` (readings, timings, the machine's load) to the output folder; ``--parts``
leaves out recurrence or the task. The numbers describe this model and these settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fnweb.build import build_template  # noqa: E402
from fnweb.experiments import ExperimentConfig, run_experiment  # noqa: E402
from fnweb.models import EMBEDDED_ID, ModelRequest, load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402
from fnweb.recurrence import RecurrenceConfig, run_recurrence  # noqa: E402
from fnweb.recurrence_results import recurrence_reading, save_recurrence  # noqa: E402
from fnweb.template_seeds import run_seeds, seed_build_config  # noqa: E402
from fnweb.templates import Template, TemplateMeta  # noqa: E402

BUILD_SETS = ["factual", "arithmetic", "code", "creative", "multilingual"]
HELDOUT_SETS = BUILD_SETS + ["sentiment"]
SITES = {  # site -> (threshold, value, width, components tested: the earlier runs' strongest and runner-up)
    "neurons": ("percentile", 98.0, 1536, [5, 0]),
    "mlp_output": ("zscore", 1.96, 576, [0, 1]),
}
N_LAYERS = 30


def readme_template(site: str) -> Template:
    """The README's template as its build settings (its masks come from the seed-0 rebuild, which seeds run first)."""
    kind, value, width, _ = SITES[site]
    meta = TemplateMeta(model_id=EMBEDDED_ID, site=site, n_layers=N_LAYERS, width=width, k=10, threshold=kind,
                        threshold_value=value, samples_per_dataset=20, max_tokens=128, seed=0,
                        datasets=[{"name": f"builtin:{s}", "config": None, "split": "train", "samples": 20}
                                  for s in BUILD_SETS])
    return Template(layers=list(range(N_LAYERS)), width=width, components={}, name=f"embedded-{site}", meta=meta)


def _sources(sets):
    return [PromptSource(f"builtin:{s}") for s in sets]


def _log(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:7.1f} s] {message}", flush=True)


def site_evidence(lm, site: str, args, out: Path, started: float) -> dict:
    """One site: seed 0's template, then recurrence, task and dose on it (quick), then the template seeds."""
    candidates, seconds = SITES[site][3], {}
    clock = time.monotonic()
    built0 = build_template(lm, seed_build_config(readme_template(site), 0))  # as the seeds run builds seed 0
    template0 = built0.template
    seconds["build"] = round(time.monotonic() - clock, 1)
    _log(f"{site}: seed 0's template built", started)
    recurrence = {}
    formats = ("auto", "basic") if "recurrence" in args.parts else ()  # with the chat template (as built), without
    for fmt in formats:
        clock = time.monotonic()
        rec = run_recurrence(lm, template0, RecurrenceConfig(
            sources=_sources(HELDOUT_SETS), samples_per_dataset=args.recurrence_per_set, k=10,
            max_tokens=args.max_tokens, seed=args.seed, prompt_format=fmt))
        save_recurrence(rec, out, f"{site}_recurrence_{fmt}")
        recurrence[fmt] = rec
        seconds[f"recurrence_{fmt}"] = round(time.monotonic() - clock, 1)
        _log(f"{site}: recurrence ({fmt} format)", started)
    task = None
    if "task" in args.parts:
        task = _task_and_dose(lm, template0, candidates, args, out, started, seconds, site)
    config = ExperimentConfig(sources=_sources(HELDOUT_SETS), samples_per_dataset=args.per_set, draws=args.draws,
                              seed=args.seed, max_tokens=args.max_tokens, components=candidates, curve=False,
                              control="magnitude", also_control="layer", outlier_rows=True)
    clock = time.monotonic()
    seeds = run_seeds(lm, template0, config, args.seeds, maps=built0.maps)
    seeds.save(out, f"{site}_seeds")
    seconds["seeds"] = round(time.monotonic() - clock, 1)
    _log(f"{site}: {args.seeds} template seeds built and measured", started)
    return {"site": site, "candidates": candidates, "seconds": seconds, "reading": seeds.reading(),
            "first_reading": seeds.experiments[0].reading(), "task_reading": task.reading() if task else None,
            "massive_channels": template0.stats.massive if template0.stats else None,
            "massive_in_components": {c: template0.stats.massive_in(template0.components[c]) if template0.stats
                                      else None for c in template0.component_ids},
            "shares": {c: sum(map(len, template0.components[c].values())) / (N_LAYERS * template0.width)
                       for c in template0.component_ids},
            "recurrence": {fmt: {"reading": recurrence_reading(rec), "cells": [asdict(c) for c in rec.cells]}
                           for fmt, rec in recurrence.items()},
            "task": _task_summary(task) if task else None}


def _task_and_dose(lm, template0, candidates, args, out: Path, started: float, seconds: dict, site: str):
    """The strongest candidate on the sentiment task, and scaled by alpha from 0 to 2 (seed 0's template)."""
    clock = time.monotonic()
    task_config = ExperimentConfig(sources=_sources(HELDOUT_SETS[:4]), samples_per_dataset=1, draws=args.task_draws,
                                   seed=args.seed, max_tokens=args.max_tokens, components=candidates[:1],
                                   curve=False, outlier_rows=False, task="sentiment", task_items=args.task_items,
                                   dose_component=candidates[0], dose_alphas=(0.0, 0.5, 1.0, 1.5, 2.0),
                                   dose_controls=("layer", "magnitude"), dose_draws=2)
    task = run_experiment(lm, template0, task_config)
    task.save(out, f"{site}_task_dose")
    seconds["task_dose"] = round(time.monotonic() - clock, 1)
    _log(f"{site}: task accuracy and dose-response", started)
    return task


def _task_summary(task) -> dict:
    row = task.rows[0]
    return {"baseline_acc": task.baseline_acc, "summary": task.task, "acc": row.network.get("acc"),
            "random_acc": row.random["acc"].mean if "acc" in row.random else None,
            "acc_interval": [row.tests["acc"].low, row.tests["acc"].high] if "acc" in row.tests else None}


def preset_evidence(lm, args, out: Path, started: float) -> dict:
    """The demo presets' components, lesioned on held-out prompts against random twins.

    The twins are matched on layer and magnitude (and, as a second control, per layer).

    The presets' template recipe (``fnweb.ui.presets``: four sets of 25, k 10) differs from
    the README's, so its own components are tested: those of the presets that claim something of one or two
    components (the five-strongest preset claims only that random damage is large too).
    """
    from fnweb.ui.presets import PRESETS
    from fnweb.ui.templates_tab import config_from_form

    recipe = config_from_form(*PRESETS[0].template_form())
    recipe.stability_runs, recipe.card_contexts = 0, 0  # masks only: the same components as the app's build
    template = build_template(lm, recipe).template
    components = sorted({c for p in PRESETS if len(p.components) <= 2 for c in p.components})  # a claim each
    config = ExperimentConfig(sources=_sources(HELDOUT_SETS), samples_per_dataset=args.per_set, draws=args.draws,
                              seed=args.seed, max_tokens=args.max_tokens, components=components, curve=False,
                              control="magnitude", also_control="layer")
    result = run_experiment(lm, template, config)
    result.save(out, "presets")
    _log("presets: their components tested", started)
    return {"components": components, "reading": result.reading(),
            "presets": [{"title": p.title, "components": list(p.components)} for p in PRESETS]}


def load_now() -> dict:
    """The machine's load and the heaviest other processes, for the record."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"loadavg": load, "cpus": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="docs/evidence")
    p.add_argument("--sites", nargs="+", default=list(SITES), choices=list(SITES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--draws", type=int, default=11,
                   help="draws per control; Fisher of 3 seeds at 1/12 passes Holm of 2")
    p.add_argument("--per_set", type=int, default=1, help="held-out prompts per set (6 sets)")
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task_items", type=int, default=16)
    p.add_argument("--task_draws", type=int, default=4)
    p.add_argument("--recurrence_per_set", type=int, default=1)
    p.add_argument("--parts", default="recurrence,task,seeds", help="which parts to run (seeds always)")
    p.add_argument("--presets", action="store_true", help="also test the demo presets' components (their template)")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lm = load_model(ModelRequest(EMBEDDED_ID, "auto", "cpu", "none", None, False))
    record = {"settings": vars(args), "load_start": load_now(), "sites": []}
    for site in args.sites:
        record["sites"].append(site_evidence(lm, site, args, out, started))
        (out / "evidence.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    if args.presets:
        record["presets"] = preset_evidence(lm, args, out, started)
    record["load_end"] = load_now()
    record["wall_seconds"] = round(time.monotonic() - started, 1)
    (out / "evidence.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    _log("done", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
