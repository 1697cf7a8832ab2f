"""The README's evidence on the embedded model: every component screened, the strongest confirmed on other seeds.

    PYTHONPATH=. nice python docs/figures/evidence.py [--output docs/evidence] [--seeds 3] [--jobs 2]

For each site (``neurons`` at the 98th percentile, fnweb's default; ``mlp_output`` at
z > 1.96, the paper's), with the README's template settings (five built-in sets, 20
prompts each, 128 tokens, k = 10, build seed 0), a **screen then confirm** design:

1. **Screen** (template seed 0): all ten components lesioned on one set of held-out
   prompts (set A), each against ``--screen_draws`` random twins matched on layer **and
   magnitude**: a permutation p, a bootstrap interval and Holm across the ten.
2. **Select**: the components whose screen p is at most ``--select_p`` (with 9 draws,
   0.1: above every twin), the ``--confirm_max`` largest beyond their twins.
3. **Confirm** (template seeds 1 and 2, components matched to seed 0's by map
   correlation): the selected components on *other* held-out prompts (set B: none of set
   A's, none of any seed's template prompts) and other draws, ``--confirm_draws`` twins
   per control, beside a row against the per-layer control and one without the
   component's massive-activation channels. Fisher combines the two seeds' p-values;
   Holm corrects across the selected components. The confirmation shares no prompt, draw
   or template with the selection, so, given what was selected, its p-values are valid
   as they stand and the family to correct for is the selected components; counting all
   ten (the unselected at p = 1) is reported beside it, as the stricter reading.
4. **Task accuracy and the dose-response** (seed 0's template): each surviving
   component lesioned on the sentiment task, and scaled by alpha from 0 to 2.
5. **Recurrence** (seed 0's template): per-sample ICA (k = 10) on held-out prompts, each
   template component's share of samples with IoU > 0.2 beside its random twins; once with
   the chat template (as built) and once with the plain format (no system prompt).

Writes ``<site>_screen.json/.csv``, ``<site>_confirm.json/.csv``, ``<site>_task_dose.json``
(with its CSVs), ``<site>_recurrence_{auto,basic}.json/.csv`` and ``evidence.json``
(readings, the selection, seconds per part, the machine's load at start and end) to the
output folder; ``--parts`` leaves out recurrence or the task; ``--jobs 2`` measures the two
sites side by side, one process and one core each. The numbers describe this
model and these settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fnweb.build import build_template  # noqa: E402
from fnweb.experiments import ExperimentConfig, run_experiment, template_prompts  # noqa: E402
from fnweb.experiments.heldout import _key, heldout_pairs  # noqa: E402
from fnweb.models import EMBEDDED_ID, ModelRequest, load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402
from fnweb.recurrence import RecurrenceConfig, run_recurrence  # noqa: E402
from fnweb.recurrence_results import recurrence_reading, save_recurrence  # noqa: E402
from fnweb.significance import holm  # noqa: E402
from fnweb.template_seeds import run_seeds, seed_build_config  # noqa: E402
from fnweb.templates import Template, TemplateMeta  # noqa: E402

BUILD_SETS = ["factual", "arithmetic", "code", "creative", "multilingual"]
HELDOUT_SETS = BUILD_SETS + ["sentiment"]
SITES = {  # site -> (threshold, value, width)
    "neurons": ("percentile", 98.0, 1536),
    "mlp_output": ("zscore", 1.96, 576),
}
N_LAYERS = 30


def readme_template(site: str) -> Template:
    """The README's template as its build settings (its masks come from the seed-0 rebuild)."""
    kind, value, width = SITES[site]
    meta = TemplateMeta(model_id=EMBEDDED_ID, site=site, n_layers=N_LAYERS, width=width, k=10, threshold=kind,
                        threshold_value=value, samples_per_dataset=20, max_tokens=128, seed=0,
                        datasets=[{"name": f"builtin:{s}", "config": None, "split": "train", "samples": 20}
                                  for s in BUILD_SETS])
    return Template(layers=list(range(N_LAYERS)), width=width, components={}, name=f"embedded-{site}", meta=meta)


def _sources(sets):
    return [PromptSource(f"builtin:{s}") for s in sets]


def _log(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:7.1f} s] {message}", flush=True)


class _Clock:
    """Seconds per part of a site's run, logged as each part ends."""

    def __init__(self, site: str, started: float):
        self.site, self.started, self.seconds, self.last = site, started, {}, time.monotonic()

    def done(self, part: str) -> None:
        now = time.monotonic()
        self.seconds[part] = round(now - self.last, 1)
        self.last = now
        _log(f"{self.site}: {part} ({self.seconds[part]} s)", self.started)


def site_evidence(lm, site: str, args, out: Path, started: float) -> dict:
    """One site: seed 0's template, recurrence on it, the screen, the confirmation on seeds 1.., task and dose."""
    clock = _Clock(site, started)
    built0 = build_template(lm, seed_build_config(readme_template(site), 0))  # as the seeds run builds seed 0
    template0 = built0.template
    clock.done("build seed 0")
    recurrence = _recurrence(lm, template0, args, out, site, clock)
    screen_config = _config(args, args.screen_draws, components=None, also_control=None, outlier_rows=False)
    screen = run_experiment(lm, template0, screen_config)
    screen.save(out, f"{site}_screen")
    clock.done("screen")
    selected = select(screen, args.select_p, args.confirm_max)
    confirm, survivors, strict = None, [], {}
    if selected:
        screened = {_key(p) for p in heldout_pairs(screen_config, template_prompts(template0)[0])[0]}
        confirm = run_seeds(lm, template0, _config(args, args.confirm_draws, components=selected), args.seeds,
                            maps=built0.maps, exclude=screened, measure_first=False)
        confirm.save(out, f"{site}_confirm")
        clock.done("confirm (the other seeds built, their lesions measured)")
        survivors = [m.component for m in confirm.survivors()]
        strict = strict_holm(confirm, len(screen.rows))
    task = None
    if "task" in args.parts and survivors:
        task = _task_and_dose(lm, template0, survivors, args, out, site)
        clock.done("task and dose")
    return {"site": site, "seconds": clock.seconds, "selected": selected, "survivors": survivors,
            "screen_reading": screen.reading(), "confirm_reading": confirm.reading() if confirm else None,
            "holm_over_all_screened": strict, "task_reading": task.reading() if task else None,
            "massive_channels": template0.stats.massive if template0.stats else None,
            "massive_in_components": {c: template0.stats.massive_in(template0.components[c]) if template0.stats
                                      else None for c in template0.component_ids},
            "recurrence": {fmt: {"reading": recurrence_reading(rec), "cells": [asdict(c) for c in rec.cells]}
                           for fmt, rec in recurrence.items()},
            "task": _task_summary(task) if task else None}


def _config(args, draws: int, components, also_control="layer", outlier_rows=True) -> ExperimentConfig:
    """Lesions of ``components`` (None: all) on one prompt of each held-out set against magnitude-matched twins."""
    return ExperimentConfig(sources=_sources(HELDOUT_SETS), samples_per_dataset=args.per_set, draws=draws,
                            seed=args.seed, max_tokens=args.max_tokens, components=components, curve=False,
                            control="magnitude", also_control=also_control, outlier_rows=outlier_rows)


def select(screen, select_p: float, most: int) -> list[int]:
    """The screened components with p at most ``select_p``, the ``most`` largest beyond their twins."""
    passed = [r for r in screen.rows if r.tests["p"].mean <= select_p]
    passed.sort(key=lambda r: -r.tests["excess"].mean)
    return [int(r.component) for r in passed[:most]]


def strict_holm(confirm, screened: int) -> dict:
    """Holm over every screened component, those not selected counted at p = 1 (the stricter reading)."""
    fishers = [m.fisher_p for m in confirm.matched]
    adjusted = holm(fishers + [1.0] * (screened - len(fishers)))
    return {str(m.component): adjusted[i] for i, m in enumerate(confirm.matched)}


def _recurrence(lm, template0, args, out: Path, site: str, clock: _Clock) -> dict:
    """Per-sample recurrence with the chat template (as built) and without it (plain text)."""
    recurrence = {}
    for fmt in (("auto", "basic") if "recurrence" in args.parts else ()):
        rec = run_recurrence(lm, template0, RecurrenceConfig(
            sources=_sources(HELDOUT_SETS), samples_per_dataset=args.recurrence_per_set, k=10,
            max_tokens=args.max_tokens, seed=args.seed, prompt_format=fmt))
        save_recurrence(rec, out, f"{site}_recurrence_{fmt}")
        recurrence[fmt] = rec
        clock.done(f"recurrence ({fmt} format)")
    return recurrence


def _task_and_dose(lm, template0, survivors, args, out: Path, site: str):
    """The surviving components on the sentiment task, the first also scaled by alpha from 0 to 2 (seed 0)."""
    task_config = ExperimentConfig(sources=_sources(HELDOUT_SETS[:4]), samples_per_dataset=1, draws=args.task_draws,
                                   seed=args.seed, max_tokens=args.max_tokens, components=list(survivors),
                                   curve=False, outlier_rows=False, task="sentiment", task_items=args.task_items,
                                   dose_component=survivors[0], dose_alphas=(0.0, 0.5, 1.0, 1.5, 2.0),
                                   dose_controls=("layer", "magnitude"), dose_draws=2)
    task = run_experiment(lm, template0, task_config)
    task.save(out, f"{site}_task_dose")
    return task


def _task_summary(task) -> dict:
    row = task.rows[0]
    return {"component": row.component, "baseline_acc": task.baseline_acc, "summary": task.task,
            "acc": row.network.get("acc"), "random_acc": row.random["acc"].mean if "acc" in row.random else None,
            "acc_interval": [row.tests["acc"].low, row.tests["acc"].high] if "acc" in row.tests else None}


def preset_evidence(lm, args, out: Path, started: float) -> dict:
    """The demo presets' components, lesioned on held-out prompts against random twins.

    The twins are matched on layer and magnitude (and, as a second control, per layer).

    The presets' template recipe (``fnweb.ui.presets``) is the README's, built as the app builds it: the
    components tested are those of the presets that claim something of one or two components (the
    five-strongest preset claims only that random damage is large too).
    """
    from fnweb.ui.presets import PRESETS
    from fnweb.ui.templates_tab import config_from_form

    recipe = config_from_form(PRESETS[0].template_form())
    recipe.stability_runs, recipe.card_contexts = 0, 0  # masks only: the same components as the app's build
    template = build_template(lm, recipe).template
    components = sorted({c for p in PRESETS if len(p.components) <= 2 for c in p.components})  # a claim each
    config = _config(args, args.confirm_draws, components=components, outlier_rows=False)
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
    p.add_argument("--seeds", type=int, default=3, help="template seeds: the screen's, then the confirmation's")
    p.add_argument("--screen_draws", type=int, default=9, help="magnitude-matched twins per component in the screen")
    p.add_argument("--select_p", type=float, default=0.1, help="screen p at most this: carried to the confirmation")
    p.add_argument("--confirm_max", type=int, default=2, help="at most this many components confirmed per site")
    p.add_argument("--confirm_draws", type=int, default=19,
                   help="twins per control in the confirmation: Fisher of two seeds at 1/20 passes Holm of 2")
    p.add_argument("--per_set", type=int, default=1, help="held-out prompts per set (6 sets)")
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task_items", type=int, default=16)
    p.add_argument("--task_draws", type=int, default=4)
    p.add_argument("--recurrence_per_set", type=int, default=1)
    p.add_argument("--parts", default="recurrence,task", help="optional parts (screen and confirmation always)")
    p.add_argument("--presets", action="store_true", help="also test the demo presets' components (their template)")
    p.add_argument("--jobs", type=int, default=1, help="sites measured side by side (one process each)")
    p.add_argument("--record", default="evidence.json", help="the run's record, in the output folder")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record = {"settings": vars(args), "load_start": load_now(), "sites": []}
    if args.jobs > 1 and len(args.sites) > 1:
        record["sites"] = side_by_side(list(sys.argv[1:] if argv is None else argv), args, out)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, args.jobs)))
        lm = load_model(ModelRequest(EMBEDDED_ID, "auto", "cpu", "none", None, False))
        for site in args.sites:
            load = load_now()
            record["sites"].append({**site_evidence(lm, site, args, out, started), "load_start": load,
                                    "load_end": load_now()})
            (out / args.record).write_text(json.dumps(record, indent=1, default=str) + "\n")
        if args.presets:
            record["presets"] = preset_evidence(lm, args, out, started)
    record["load_end"] = load_now()
    record["wall_seconds"] = round(time.monotonic() - started, 1)
    (out / args.record).write_text(json.dumps(record, indent=1, default=str) + "\n")
    _log("done", started)
    return 0


def side_by_side(argv: list[str], args, out: Path) -> list[dict]:
    """Each site in its own process (a share of the cores each), their records gathered in the sites' order."""
    children = [subprocess.Popen([sys.executable, __file__, *argv, "--sites", site, "--record",
                                  f"evidence_{site}.json"]) for site in args.sites]
    if any(child.wait() for child in children):
        raise SystemExit("A site's run failed (its output is above); the other sites' files are kept.")
    sites = []
    for site in args.sites:
        path = out / f"evidence_{site}.json"
        sites += json.loads(path.read_text())["sites"]
        path.unlink()
    return sites


if __name__ == "__main__":
    sys.exit(main())
