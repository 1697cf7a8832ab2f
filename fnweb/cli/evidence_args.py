"""``fnexperiment``'s evidence options: intervention, controls, massive channels, dose-response, seeds, recurrence.

``add_evidence_args`` adds the flags to a parser (their choices read from the tables in
``fnweb.interventions`` and ``fnweb.controls``); ``evidence_fields`` turns parsed
arguments into ``ExperimentConfig`` fields; ``recurrence_config`` into the per-sample
recurrence's config. Checking the values is the configs' job (one clear line each), not
argparse's, so the app and the CLI say the same. It knows nothing about running them.
"""

from __future__ import annotations

import argparse

from ..controls import CONTROLS, DEFAULT_CONTROL, DEFAULT_MASSIVE, MASSIVE, controls_help
from ..errors import FnwebError
from ..experiments.config import DOSE_ALPHAS, DOSE_DRAWS
from ..interventions import DEFAULT_INTERVENTION, INTERVENTIONS
from ..recurrence import DEFAULT_IOU, RecurrenceConfig
from ..template_seeds import MAX_SEEDS

ZERO = "zero"  # the and the paper's word for the lesion: an alias of DEFAULT_INTERVENTION
ACTING = [name for name, i in INTERVENTIONS.items() if i.acts_on_network]


def add_evidence_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evidence", "how each component is changed, against which random twins, and more tests")
    g.add_argument("--intervention", choices=[ZERO, *ACTING], default=ZERO,
                   help="what each row does to its component's channels: zero (= lesion, default), mean (their mean "
                        "over the template's tokens), scale (multiplied by --alpha)")
    g.add_argument("--alpha", type=float, default=None, help="the factor of --intervention scale, 0 to 10")
    g.add_argument("--control", choices=list(CONTROLS), default=DEFAULT_CONTROL,
                   help=f"how random twins are drawn ({DEFAULT_CONTROL}): {controls_help()}")
    g.add_argument("--also_control", choices=list(CONTROLS), default=None,
                   help="every component again against twins drawn by this control (variant rows)")
    g.add_argument("--massive", choices=list(MASSIVE), default=DEFAULT_MASSIVE,
                   help="massive-activation channels: " + " · ".join(f"{m.name}: {m.help}" for m in MASSIVE.values()))
    g.add_argument("--no_outlier_rows", action="store_true",
                   help="no row 'without massive channels' for components holding one")
    g.add_argument("--dose_component", type=int, default=None,
                   help="a dose-response: this component scaled by each --dose_alphas against its random twins")
    g.add_argument("--dose_alphas", default=",".join(f"{a:g}" for a in DOSE_ALPHAS),
                   help=f"the dose-response's factors, comma-separated ({','.join(f'{a:g}' for a in DOSE_ALPHAS)})")
    g.add_argument("--dose_controls", default=",".join(CONTROLS), help=f"its twins' controls ({','.join(CONTROLS)})")
    g.add_argument("--dose_draws", type=int, default=DOSE_DRAWS, help=f"twins per factor and control ({DOSE_DRAWS})")
    g.add_argument("--template_seeds", type=int, default=1,
                   help=f"rebuild the template with this many build seeds (1 to {MAX_SEEDS}), match components by "
                        "map correlation and test each across seeds (Fisher, then Holm); 1: this template only (1)")
    g.add_argument("--recurrence", action="store_true",
                   help="also per-sample ICA on the held-out prompts: how often each component recurs (IoU)")
    g.add_argument("--recurrence_k", type=int, default=10, help="per-sample ICA components (10)")
    g.add_argument("--recurrence_iou", type=float, default=DEFAULT_IOU, help=f"recurs above this IoU ({DEFAULT_IOU})")


def _numbers(text: str, what: str, kind=float) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise FnwebError(f"{what} must be comma-separated numbers, e.g. 0,0.5,1,2 (got '{text}').") from None


def evidence_fields(args) -> dict:
    """The ``ExperimentConfig`` fields of the evidence options."""
    return dict(
        intervention=DEFAULT_INTERVENTION if args.intervention == ZERO else args.intervention, alpha=args.alpha,
        control=args.control, also_control=args.also_control, massive=args.massive,
        outlier_rows=not args.no_outlier_rows, dose_component=args.dose_component,
        dose_alphas=_numbers(args.dose_alphas, "Dose-response factors"),
        dose_controls=tuple(c.strip() for c in args.dose_controls.split(",") if c.strip()),
        dose_draws=args.dose_draws,
    )


def recurrence_config(args, sources) -> RecurrenceConfig:
    """Per-sample recurrence on the experiment's held-out sets, with its prompts and seed."""
    config = RecurrenceConfig(sources=list(sources), samples_per_dataset=max(args.samples_per_dataset, 1),
                              k=args.recurrence_k, iou_threshold=args.recurrence_iou, max_tokens=args.max_tokens,
                              seed=args.seed, exclude_template_prompts=not args.keep_overlap,
                              prompt_format=args.template_format)
    config.validate()
    return config
