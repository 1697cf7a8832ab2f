"""``buildtemplates``: build an ICA template from datasets, as the original CLI did.

    buildtemplates MODEL DATASET [DATASET ...] [options]
    buildtemplates --model_name_or_path MODEL --ica_build_templates_from DATASET ... [options]

MODEL is a Hub id, a local folder or ``embedded`` (the shipped SmolLM2-135M-Instruct);
DATASET is a Hub dataset name, a .json/.jsonl/.csv/.parquet file or ``builtin:NAME``.
Prints the template path and the coverage summary (and with ``--explain`` each
component's card, which the template keeps). With ``--push_to_hub REPO`` the
saved template is then pushed to the Hugging Face Hub (token from HF_TOKEN or the
saved login, ``hf auth login``; never a flag) and the repo URL is printed.
"""

from __future__ import annotations

import argparse
import sys
import time

from .. import hub
from ..archs import DEFAULT_SITE, SITES, sites_help
from ..build import BuildConfig, build_template, default_output_path
from ..capture import STORAGE_DTYPES
from ..errors import FnwebError
from ..explain import DEFAULT_TOP
from ..hubcard import coverage_png
from ..ids import model_alias
from ..io import check_writable_file
from ..models import DTYPES, ModelRequest, load_model
from ..progress import Progress
from ..prompts import FORMATS, PromptSource, builtin_sets, sample_pairs
from ..stability import DEFAULT_RUNS
from ..thresholds import DEFAULT_RULE, THRESHOLDS
from . import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="buildtemplates",
        description="Build ICA functional-network templates from datasets.",
        epilog=f"Built-in prompt sets: {', '.join('builtin:' + s for s in builtin_sets())}.",
    )
    p.add_argument("model", nargs="?", help="Hub id, local folder, or 'embedded'")
    p.add_argument("datasets", nargs="*", help="Hub dataset names, local files, or builtin:NAME")
    p.add_argument("--model_name_or_path", help="the model (named form)")
    p.add_argument("--ica_build_templates_from", nargs="+", default=[], help="datasets (named form)")
    p.add_argument("--ica_template_samples_per_ds", type=int, default=100, help="samples per dataset (100)")
    p.add_argument("--ica_template_output", default="./ica_templates/", help="output folder (./ica_templates/)")
    p.add_argument("--output_file", help="exact path of the template file (overrides the folder layout)")
    p.add_argument("--ica_components", type=int, default=10, help="ICA components k (10)")
    p.add_argument("--threshold", choices=list(THRESHOLDS), default=DEFAULT_RULE,
                   help=" or ".join(rule.help for rule in THRESHOLDS.values()) + f" ({DEFAULT_RULE})")
    for rule in THRESHOLDS.values():  # each rule's value has its own flag, as in the original
        p.add_argument(f"--{rule.cli_flag}", type=float, default=rule.default,
                       help=f"{rule.value_name} for --threshold {rule.name} ({rule.default:g})")
    p.add_argument("--site", choices=list(SITES), default=DEFAULT_SITE, help=f"where to capture ({sites_help()})")
    p.add_argument("--ica_dtype", choices=list(STORAGE_DTYPES), default="auto",
                   help="storage dtype of captured activations (auto = float16)")
    p.add_argument("--max_seq_length", type=int, default=512, help="max tokens per sample (512)")
    p.add_argument("--template_format", choices=list(FORMATS), default="auto", help="prompt format (auto)")
    p.add_argument("--dataset_config", default=None, help="Hub dataset configuration")
    p.add_argument("--dataset_split", default="train", help="Hub dataset split (train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8, help="capture batch size (8)")
    p.add_argument("--no_standardise", action="store_true", help="skip z-scoring channels before PCA")
    p.add_argument("--stability_runs", type=int, default=DEFAULT_RUNS,
                   help=f"ICA re-runs on resampled tokens to score each component's stability ({DEFAULT_RUNS}; 0: skip)")
    p.add_argument("--torch_dtype", choices=list(DTYPES), default="auto", help="model dtype")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps, or multi (device_map=auto)")
    p.add_argument("--use_4bit", action=argparse.BooleanOptionalAction, default=False, help="load in 4-bit")
    p.add_argument("--use_8bit", action=argparse.BooleanOptionalAction, default=False, help="load in 8-bit")
    p.add_argument("--revision", default=None, help="model revision")
    p.add_argument("--trust_remote_code", action="store_true", help="run code from the model repo")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    cards = p.add_argument_group("component cards (what each network does; kept in the template)")
    cards.add_argument("--card_contexts", type=int, default=DEFAULT_TOP,
                       help=f"strongest contexts kept per component ({DEFAULT_TOP}; 0: no cards)")
    cards.add_argument("--card_negative", action="store_true", help="also keep each component's most negative contexts")
    cards.add_argument("--explain", action="store_true", help="print each component's card after the build")
    sharing = p.add_argument_group("sharing (token from HF_TOKEN or `hf auth login`)")
    sharing.add_argument("--push_to_hub", metavar="REPO", help="after saving, push the template to this Hub repo "
                         "('name' goes to your account, or 'namespace/name')")
    sharing.add_argument("--hub_private", action="store_true", help="create the Hub repo as private")
    sharing.add_argument("--hub_overwrite", action="store_true",
                         help="push even if the repo holds files fnweb did not write (its other files are kept)")
    return p


def _model_id(args) -> str:
    model = args.model_name_or_path or args.model
    if not model:
        raise FnwebError("No model given: pass MODEL (a Hub id, a folder, or 'embedded').")
    return model_alias(model)


def _sources(args) -> list[PromptSource]:
    names = list(args.datasets) + list(args.ica_build_templates_from)
    if not names:
        raise FnwebError("No datasets given: pass one or more datasets after the model.")
    return [PromptSource(n, args.dataset_config, args.dataset_split) for n in names]


def _printer(quiet: bool):
    last = {"t": 0.0}

    def show(event: Progress) -> None:
        now = time.monotonic()
        if quiet or (now - last["t"] < 1.0 and event.done < event.total):
            return
        last["t"] = now
        print(f"  {event.describe()}", file=sys.stderr, flush=True)

    return show


def _push(template, path, args) -> None:
    """Push the saved template; on failure say that the local file is kept."""
    try:
        print(f"\n{hub.describe_target(args.push_to_hub)}", flush=True)
        url = hub.push_template(template, args.push_to_hub, private=args.hub_private,
                                heatmap_png=coverage_png(template), overwrite=args.hub_overwrite)
    except FnwebError as exc:
        raise FnwebError(f"{exc} The template stays saved at {path}; push it later with "
                         f"fnweb.hub.push_template(Template.load(path), repo).") from exc
    print(f"Pushed to the Hub: {url}")


def _explain(template) -> None:
    from ..cards import stored_cards
    from .explain import print_cards

    print()
    print_cards(template, stored_cards(template))


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        if args.use_4bit and args.use_8bit:
            raise FnwebError("Choose one of --use_4bit and --use_8bit.")
        model_id, sources = _model_id(args), _sources(args)
        config = BuildConfig(
            sources=sources, samples_per_dataset=args.ica_template_samples_per_ds,
            max_tokens=args.max_seq_length, k=args.ica_components, site=args.site, threshold=args.threshold,
            threshold_value=getattr(args, THRESHOLDS[args.threshold].cli_flag),
            seed=args.seed, batch_size=args.batch_size, standardise=not args.no_standardise,
            prompt_format=args.template_format, activation_dtype=args.ica_dtype, stability_runs=args.stability_runs,
            card_contexts=args.card_contexts, card_negative=args.card_negative,
        )
        config.validate()
        for rule in THRESHOLDS.values():  # a value given for the other rule is refused too, not ignored
            rule.check(getattr(args, rule.cli_flag))
        if args.explain and not args.card_contexts:
            raise FnwebError("--explain prints the cards, but --card_contexts 0 makes none: drop one of the two.")
        if args.push_to_hub:  # fail before the build, not after it: no network needed for these checks
            hub.check_repo_id(args.push_to_hub)
            hub.resolve_token()
        output = args.output_file or default_output_path(args.ica_template_output, model_id, sources)
        check_writable_file(output, "the template file")  # now, not after the build
        quant = "4bit" if args.use_4bit else "8bit" if args.use_8bit else "none"
        request = ModelRequest(model_id, args.torch_dtype, args.device, quant, args.revision, args.trust_remote_code)
        request.validate()  # the device, before the datasets are read
        pairs = sample_pairs(sources, config.samples_per_dataset, config.seed)  # readable, before the model loads
        lm = load_model(request)
        result = build_template(lm, config, output=output, progress=_printer(args.quiet), pairs=pairs)
        print(f"Templates saved to: {result.path}")
        print(f"Number of components: {len(result.template.components)}")
        print(f"Tokens captured: {result.n_tokens:,}; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()))
        print()
        print(result.template.coverage_summary())
        if args.explain:
            _explain(result.template)
        if args.push_to_hub:
            _push(result.template, result.path, args)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
