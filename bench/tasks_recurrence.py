"""Zero-shot task accuracy and per-sample recurrence on the embedded model, printed as tables.

    PYTHONPATH=. python bench/tasks_recurrence.py [--tasks] [--recurrence] [--per_set 20] [--site neurons]

``--tasks``: each task of ``fnweb.tasks.TASKS`` on its whole built-in set, unmasked,
beside chance (with a one-sided binomial p-value against it for choice tasks).
``--recurrence``: a 10-component template built from five built-in sets (as
``docs/figures/reproduce.sh`` builds it), then per-sample ICA (k = 10) on ``--per_set``
held-out prompts of each of six sets: the share of samples in which each template
component recurs (IoU > 0.2), beside its random twins, and the time per sample.
Neither is a timed test; the numbers describe this model and machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fnweb.build import BuildConfig, build_template  # noqa: E402
from fnweb.models import load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402
from fnweb.recurrence import RecurrenceConfig, run_recurrence  # noqa: E402
from fnweb.tasks import TASKS, evaluate  # noqa: E402

BUILD_SETS = ["factual", "arithmetic", "code", "creative", "multilingual"]
HELDOUT_SETS = BUILD_SETS + ["sentiment"]
SITES = {"neurons": ("percentile", 98.0), "mlp_output": ("zscore", 1.96)}


def above_chance(correct: int, items: int, chance: float) -> str:
    if chance <= 0:
        return "n/a"
    from scipy.stats import binomtest

    return f"{binomtest(correct, items, chance, alternative='greater').pvalue:.1e}"


def task_table(lm) -> None:
    print("| task | items | accuracy | correct | chance | always-same-answer | p (> chance) | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in TASKS:
        clock = time.perf_counter()
        result = evaluate(lm, name, batch_size=16)
        print(f"| {name} | {result.items} | {result.accuracy:.3f} | {result.correct} | {result.chance:.2f} | "
              f"{result.majority:.2f} | {above_chance(result.correct, result.items, result.chance)} | "
              f"{time.perf_counter() - clock:.0f} |", flush=True)


def recurrence_table(lm, site: str, per_set: int) -> None:
    kind, value = SITES[site]
    config = BuildConfig([PromptSource(f"builtin:{s}") for s in BUILD_SETS], samples_per_dataset=20, max_tokens=128,
                         k=10, site=site, threshold=kind, threshold_value=value, stability_runs=0)
    clock = time.perf_counter()
    template = build_template(lm, config).template
    print(f"\nTemplate: site {site}, {kind} {value}, k = 10, built in {time.perf_counter() - clock:.0f} s "
          f"from {', '.join(BUILD_SETS)} (20 prompts each).")
    sources = [PromptSource(f"builtin:{s}") for s in HELDOUT_SETS]
    result = run_recurrence(lm, template, RecurrenceConfig(sources, samples_per_dataset=per_set, k=10))
    seconds = [m.seconds for m in result.samples]
    tokens = [m.tokens for m in result.samples]
    print(f"{len(result.samples)} samples in {result.seconds:.0f} s: {sum(seconds) / len(seconds):.2f} s per sample "
          f"(mean {sum(tokens) / len(tokens):.0f} tokens); {sum(not m.converged for m in result.samples)} ICA runs "
          "did not converge.")
    for note in result.warnings:
        print(f"  note: {note}")
    table = result.share_table()
    twins = {(c.source, c.component): c for c in result.cells}
    print("\nShare of samples in which each template component recurs (best IoU > 0.2); "
          "in brackets, its random twins':")
    print("| component | " + " | ".join(s.removeprefix("builtin:") for s in result.sets) + " |")
    print("|---:|" + "---:|" * len(result.sets))
    for c in result.components:
        cells = [f"{table[s][c]:.2f} ({twins[(s, c)].random_share:.2f})" if twins[(s, c)].random_share is not None
                 else f"{table[s][c]:.2f} (-)" for s in result.sets]
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("\nMean best IoU per component and set:")
    for c in result.components:
        print(f"  {c}: " + ", ".join(f"{twins[(s, c)].mean_iou:.3f}" for s in result.sets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", action="store_true")
    parser.add_argument("--recurrence", action="store_true")
    parser.add_argument("--per_set", type=int, default=20)
    parser.add_argument("--site", choices=list(SITES), action="append")
    args = parser.parse_args()
    lm = load_model("embedded:SmolLM2-135M-Instruct")
    if args.tasks or not args.recurrence:
        task_table(lm)
    if args.recurrence or not args.tasks:
        for site in args.site or ["neurons"]:
            recurrence_table(lm, site, args.per_set)


if __name__ == "__main__":
    main()
