"""``fnexperiment``: lesion and preserve a template's networks against matched random controls.

    fnexperiment MODEL TEMPLATE HELDOUT [HELDOUT ...] [options]

MODEL is a Hub id, a local folder or ``embedded``; TEMPLATE a template file (or its
folder); HELDOUT a Hub dataset, a .json/.jsonl/.csv/.parquet file or ``builtin:NAME``.
Writes ``experiment.json``, ``experiment_components.csv``, ``experiment_curve.csv``
(and ``experiment_dose.csv`` with a dose-response) and the figures as HTML to the output
folder; prints the table and a reading. The evidence options (``fnweb.cli.evidence_args``)
choose the intervention, the random twins' control, variant rows and a dose-response;
``--template_seeds S`` rebuilds the template with S seeds and tests each component across
them (``seeds.json``/``seeds.csv``, and the first seed's experiment files as above);
``--recurrence`` adds per-sample ICA (``recurrence.json``/``.csv`` and a heatmap).
Ctrl-C stops the run and writes the partial result, marked partial.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ..cards import component_labels
from ..controls import CONTROLS
from ..errors import Stopped
from ..experiment_plots import write_figures, write_html
from ..experiment_tables import table_text
from ..experiments import (
    DEFAULT_DRAWS,
    IN_PROGRESS,
    MAX_DRAWS,
    STOPPED,
    ExperimentConfig,
    check_readable,
    experiment_stream,
)
from ..ids import model_alias
from ..io import check_writable_folder
from ..masks import DEFAULT_PRESERVE_SCOPE, PRESERVE_SCOPES, component_ids_from_text, preserve_scopes_help
from ..models import DTYPES, ModelRequest, load_model
from ..prompts import FORMATS, PromptSource, builtin_sets
from ..recurrence import recurrence_stream
from ..recurrence_results import recurrence_figure, recurrence_reading, save_recurrence
from ..tasks import TASKS
from ..template_seeds import check_seeds, seeds_stream
from ..templates import Template
from . import run_cli
from .buildtemplates import _printer
from .evidence_args import add_evidence_args, evidence_fields, recurrence_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fnexperiment",
        description="Does a network matter? Lesion each component and keep the top ones, against random "
                    "neurons drawn by --control (" + "; ".join(f"{name}: {c.title}" for name, c in CONTROLS.items())
                    + "), on held-out prompts.",
        epilog=f"Built-in prompt sets: {', '.join('builtin:' + s for s in builtin_sets())}.",
    )
    p.add_argument("model", help="Hub id, local folder, or 'embedded'")
    p.add_argument("template", help="template file (global_templates.json) or its folder")
    p.add_argument("heldout", nargs="+", help="held-out prompt sets: Hub datasets, local files, or builtin:NAME")
    p.add_argument("--samples_per_dataset", type=int, default=20, help="held-out prompts per set, 0 = all (20)")
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                   help=f"random-control draws per condition, 1 to {MAX_DRAWS} ({DEFAULT_DRAWS})")
    p.add_argument("--seed", type=int, default=0, help="held-out sampling and random draws (0)")
    p.add_argument("--output", default="./experiment/", help="output folder (./experiment/)")
    p.add_argument("--components", nargs="+", default=None, help="components to test: '0 3 5', '0,3,5' or "
                   "'[0, 3, 5]' (all)")
    p.add_argument("--max_tokens", type=int, default=128, help="tokens per prompt + response (128)")
    p.add_argument("--score", choices=["response", "all"], default="response",
                   help="score the response's tokens (default) or every next token")
    p.add_argument("--keep_overlap", action="store_true",
                   help="keep held-out prompts the template was built from (warns how many)")
    p.add_argument("--no_curve", action="store_true", help="skip the preservation curve")
    p.add_argument("--task", choices=list(TASKS), default=None,
                   help="also measure accuracy on a labelled task under each lesion: " +
                        "; ".join(f"{t.name}: {t.description}" for t in TASKS.values()))
    p.add_argument("--task_items", type=int, default=0, help="task items, 0 = all (0)")
    p.add_argument("--task_source", default=None,
                   help="another labelled set for the task (a file with the task's fields; default: its built-in set)")
    p.add_argument("--preserve_scope", choices=list(PRESERVE_SCOPES), default=DEFAULT_PRESERVE_SCOPE,
                   help=f"which layers the preservation curve edits ({preserve_scopes_help()}; "
                        f"{DEFAULT_PRESERVE_SCOPE})")
    p.add_argument("--mcq", nargs="?", const="builtin:mcq", default=None,
                   help="the same as --task mcq (with a multiple-choice file, --task_source too)")
    p.add_argument("--template_format", choices=list(FORMATS), default="auto", help="prompt format (auto)")
    p.add_argument("--batch_tokens", type=int, default=4096, help="rows x tokens per forward pass (4096)")
    p.add_argument("--no_figures", action="store_true", help="skip the HTML figures")
    p.add_argument("--dataset_config", default=None, help="Hub dataset configuration")
    p.add_argument("--dataset_split", default="train", help="Hub dataset split (train)")
    p.add_argument("--torch_dtype", choices=list(DTYPES), default="auto", help="model dtype")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps, or multi")
    p.add_argument("--revision", default=None, help="model revision")
    p.add_argument("--trust_remote_code", action="store_true", help="run code from the model repo")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_evidence_args(p)
    return p


def config_from(args) -> ExperimentConfig:
    return ExperimentConfig(
        sources=[PromptSource(n, args.dataset_config, args.dataset_split) for n in args.heldout],
        samples_per_dataset=args.samples_per_dataset, draws=args.draws, seed=args.seed,
        max_tokens=args.max_tokens, score=args.score,
        components=component_ids_from_text(args.components) if args.components else None,
        exclude_template_prompts=not args.keep_overlap, curve=not args.no_curve,
        task="mcq" if args.mcq and not args.task else args.task, task_items=args.task_items,
        task_source=args.task_source or (args.mcq if args.mcq and args.mcq != "builtin:mcq" else None),
        prompt_format=args.template_format, batch_tokens=args.batch_tokens, preserve_scope=args.preserve_scope,
        **evidence_fields(args),
    )


def _last(stream, mark):
    """The stream's last result; Ctrl-C ends it and keeps what was measured (``mark`` marks it partial)."""
    result = None
    try:
        for state in stream:
            result = state  # kept so that Ctrl-C can still write the latest state
    except (KeyboardInterrupt, Stopped):
        if result is None:
            raise KeyboardInterrupt from None
        print("  stopped: writing the result so far, marked partial", file=sys.stderr)
        result = mark(result)
    return result


def _partial(result):
    return replace(result, partial=True, partial_note=result.partial_note.replace(IN_PROGRESS, STOPPED, 1))


def _experiment(lm, template, config, args, progress) -> dict:
    """The experiment (on each template seed when asked): its files, then its table and reading printed."""
    paths = {}
    if args.template_seeds > 1:
        seeds = _last(seeds_stream(lm, template, config, args.template_seeds, progress), _partial)
        paths.update(seeds.save(args.output))
        result, text = seeds.experiments[0], seeds.reading()
    else:
        result = _last(experiment_stream(lm, template, config, progress), _partial)
        text = ""
    paths.update(result.save(args.output))
    if not args.no_figures:
        paths.update(write_figures(result, args.output))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(table_text(result))
    labels = component_labels(template)
    if labels:  # what each component does, from the template's cards
        print("\n".join(f"  component {c}: {label}" for c, label in labels.items()))
    print()
    print(result.reading())
    if text:
        print()
        print(text)
    return paths


def _recurrence(lm, template, args, sources, progress) -> dict:
    result = _last(recurrence_stream(lm, template, recurrence_config(args, sources), progress), _partial)
    paths = save_recurrence(result, args.output)
    if not args.no_figures:
        paths.update(write_html(recurrence_figure(result), args.output, "recurrence"))
    print()
    print(recurrence_reading(result))
    return paths


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        config = config_from(args)
        config.validate()
        check_seeds(args.template_seeds)
        if args.recurrence:
            recurrence_config(args, config.sources)  # its settings checked now, not after the experiment
        check_writable_folder(args.output)  # now, not after the run
        template = Template.load(args.template)
        if config.components:
            template.check_components(config.components)
        model_id = model_alias(args.model)
        request = ModelRequest(model_id, args.torch_dtype, args.device, "none", args.revision, args.trust_remote_code)
        request.validate()  # the device, before the prompts are read
        check_readable(config)  # the held-out sets, before the model loads
        lm = load_model(request)
        paths = _experiment(lm, template, config, args, _printer(args.quiet))
        if args.recurrence:
            paths.update(_recurrence(lm, template, args, config.sources, _printer(args.quiet)))
        print()
        for name, path in paths.items():
            if name != "plotly.js":
                print(f"{name}: {path}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
