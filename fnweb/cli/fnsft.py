"""``fnsft``: LoRA fine-tuning with a functional network lesioned, preserved, or a random control.

The original's core flags, over ``fnweb.finetune``. Prints progress lines and, at the
end, the learning and forgetting figures. Works under ``accelerate launch --multi_gpu``
and ``torchrun``; a launch that started fewer processes than it asked for (``accelerate
launch --cpu`` without MPI) is refused by the builds' own check (``fnweb.shards``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import contextmanager

from ..archs import SITES, sites_help
from ..errors import FnwebError, Stopped
from ..finetune.card import figures_table
from ..finetune.config import CONTROL_OF, LOSS_ON, MASK_MODE_ALIASES, MASK_MODES, SCHEDULES, TrainConfig
from ..finetune.pipeline import execute, prepare
from ..ids import EMBEDDED_ID, model_alias
from ..interventions import interventions_help
from ..masks import DEFAULT_PRESERVE_SCOPE, PRESERVE_SCOPES, component_ids_from_text, preserve_scopes_help
from ..models import DTYPES
from ..progress import StopFlag
from ..prompts import FORMATS, builtin_sets
from ..shards import check_launch
from . import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fnsft",
        description="LoRA fine-tuning with ICA functional networks lesioned or preserved; "
                    "reports learning (task loss) and forgetting (KL from the base model on general prompts).",
        epilog=f"Built-in datasets: {', '.join('builtin:' + s for s in builtin_sets())}.",
    )
    d = TrainConfig()
    _data_args(p.add_argument_group("data and output"), d)
    _training_args(p.add_argument_group("training"), d)
    _model_args(p.add_argument_group("model and LoRA"), d)
    _mask_args(p.add_argument_group("functional-network mask"), d)
    g = p.add_argument_group("learning and forgetting")
    g.add_argument("--general_samples", type=int, default=d.general_per_set,
                   help=f"held-out prompts per general built-in set ({d.general_per_set}; 0: skip)")
    g.add_argument("--max_eval_examples", type=int, default=d.max_eval_examples,
                   help=f"validation examples scored ({d.max_eval_examples})")
    sharing = p.add_argument_group("sharing (token from HF_TOKEN or `hf auth login`)")
    sharing.add_argument("--push_to_hub", action="store_true", help="after training, push the run to the Hub")
    sharing.add_argument("--hub_repo_id", metavar="REPO", help="the Hub repo for --push_to_hub ('name' or 'org/name')")
    sharing.add_argument("--push_merged", action="store_true",
                         help="also push merged/: the adapter folded into the base weights with the mask baked in "
                              "(a plain transformers model; not for 4/8-bit runs)")
    sharing.add_argument("--hub_private", action="store_true", help="create the Hub repo as private")
    sharing.add_argument("--hub_overwrite", action="store_true",
                         help="write into a repo that holds other files (they are kept)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _check_push(args) -> None:
    """Fail before training, not after it: these checks need no network."""
    if not args.push_to_hub:
        if args.push_merged:
            raise FnwebError("--push_merged goes with --push_to_hub and --hub_repo_id REPO.")
        return
    from .. import hub

    if not args.hub_repo_id:
        raise FnwebError("--push_to_hub needs --hub_repo_id REPO.")
    if args.push_merged and (args.use_4bit or args.use_8bit):
        raise FnwebError("--push_merged cannot merge a 4/8-bit (QLoRA) run: push the adapter alone.")
    hub.check_repo_id(args.hub_repo_id)
    hub.resolve_token()


def _push(args, folder) -> None:
    from .. import hub

    print(f"\n{hub.describe_target(args.hub_repo_id)}", flush=True)
    try:
        url = hub.push_run(folder, args.hub_repo_id, private=args.hub_private, overwrite=args.hub_overwrite,
                           merged=args.push_merged, trust_remote_code=args.trust_remote_code)
    except FnwebError as exc:
        raise FnwebError(f"{exc} The run is saved in {folder}; push it again with "
                         f"fnweb.hub.push_run('{folder}', '{args.hub_repo_id}').") from exc
    print(f"Pushed to: {url}")


def _data_args(g, d: TrainConfig) -> None:
    g.add_argument("--model_name_or_path", default=EMBEDDED_ID, help="Hub id, local folder, or 'embedded' (default)")
    g.add_argument("--dataset_name_or_path", required=True,
                   help="builtin:NAME, a .json/.jsonl/.csv/.parquet file, or a Hub dataset")
    g.add_argument("--dataset_config", default=None, help="Hub dataset configuration")
    g.add_argument("--dataset_split", default="train", help="Hub dataset split (train)")
    g.add_argument("--output_dir", required=True, help="the run folder (must not exist)")
    g.add_argument("--overwrite_output_dir", action="store_true", help="replace an existing run folder")
    g.add_argument("--max_seq_length", type=int, default=d.max_seq_len, help=f"tokens per example ({d.max_seq_len})")
    g.add_argument("--validation_split", type=float, default=d.validation_split,
                   help=f"share held out ({d.validation_split})")
    g.add_argument("--template_format", choices=list(FORMATS), default="auto", help="prompt format (auto)")
    g.add_argument("--loss_on", choices=list(LOSS_ON), default="response",
                   help="response tokens (default) or all tokens")


def _training_args(g, d: TrainConfig) -> None:
    g.add_argument("--num_train_epochs", type=float, default=d.num_epochs, help=f"epochs ({d.num_epochs:g})")
    g.add_argument("--max_steps", type=int, default=d.max_steps,
                   help="optimizer steps; overrides epochs (-1: use epochs)")
    g.add_argument("--per_device_train_batch_size", type=int, default=d.batch_size, help=f"({d.batch_size})")
    g.add_argument("--gradient_accumulation_steps", type=int, default=d.grad_accum, help=f"({d.grad_accum})")
    g.add_argument("--learning_rate", type=float, default=d.learning_rate, help=f"({d.learning_rate:g})")
    g.add_argument("--lr_scheduler_type", choices=list(SCHEDULES), default=d.lr_schedule, help=f"({d.lr_schedule})")
    g.add_argument("--warmup_ratio", type=float, default=d.warmup_ratio, help=f"({d.warmup_ratio:g})")
    g.add_argument("--weight_decay", type=float, default=d.weight_decay, help=f"({d.weight_decay:g})")
    g.add_argument("--max_grad_norm", type=float, default=d.max_grad_norm, help=f"({d.max_grad_norm:g}; 0: off)")
    g.add_argument("--eval_steps", type=int, default=None, help="steps between validation losses (about 5 per run)")
    g.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for memory")
    g.add_argument("--seed", type=int, default=d.seed)


def _model_args(g, d: TrainConfig) -> None:
    g.add_argument("--torch_dtype", choices=list(DTYPES), default="auto", help="model dtype (auto)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--use_4bit", action=argparse.BooleanOptionalAction, default=False,
                   help="QLoRA: load in 4-bit (off)")
    g.add_argument("--use_8bit", action=argparse.BooleanOptionalAction, default=False, help="load in 8-bit (off)")
    g.add_argument("--revision", default=None, help="model revision")
    g.add_argument("--trust_remote_code", action="store_true", help="run code from the model repo")
    g.add_argument("--lora_r", type=int, default=d.lora_r, help=f"({d.lora_r})")
    g.add_argument("--lora_alpha", type=float, default=d.lora_alpha, help=f"({d.lora_alpha:g})")
    g.add_argument("--lora_dropout", type=float, default=d.lora_dropout, help=f"({d.lora_dropout:g})")
    g.add_argument("--lora_target_modules", nargs="+", default=None,
                   help="module names (space or comma separated); default: the architecture's")


def _mask_args(g, d: TrainConfig) -> None:
    g.add_argument("--mask_mode", choices=[*MASK_MODES, *MASK_MODE_ALIASES], default=d.mask_mode,
                   help=f"none; an intervention on the components ({interventions_help()}); "
                        "or random: a matched random control. The original's names are accepted: "
                        + ", ".join(f"{old} = {new}" for old, new in MASK_MODE_ALIASES.items()))
    g.add_argument("--random_control_of", choices=list(CONTROL_OF), default=d.control_of,
                   help=f"the intervention a random control copies ({d.control_of})")
    g.add_argument("--ica_template_path", default=None,
                   help="a template file; without it one is computed from the training data")
    g.add_argument("--ica_component_ids", nargs="+", default=["0"],
                   help="components: '0 3' (the original's form), '0,3' or '[0, 3]' (0)")
    g.add_argument("--ica_components", type=int, default=d.ica_components,
                   help=f"k when computing a template ({d.ica_components})")
    g.add_argument("--ica_percentile", type=float, default=d.ica_percentile,
                   help=f"threshold when computing a template ({d.ica_percentile:g})")
    g.add_argument("--ica_site", choices=list(SITES), default=d.site,
                   help=f"site when computing a template ({d.site}; {sites_help()})")
    g.add_argument("--ica_mask_layers", default=None, help="layers to mask, e.g. '0,2:5,8' (all)")
    g.add_argument("--preserve_scope", choices=list(PRESERVE_SCOPES), default=DEFAULT_PRESERVE_SCOPE,
                   help=f"which layers preserve edits ({preserve_scopes_help()}; {DEFAULT_PRESERVE_SCOPE})")
    g.add_argument("--restrict_updates", action="store_true",
                   help="only the kept neurons' MLP weights may change (everything else stays bit-identical)")
    g.add_argument("--mask_activations", action=argparse.BooleanOptionalAction, default=True,
                   help="apply the mask to activations (on); off with --restrict_updates: "
                        "the mask only limits which weights change")


def mask_mode_of(args) -> str:
    """The mask mode, the original's older name mapped to fnweb's (with a one-line note)."""
    if args.mask_mode in MASK_MODE_ALIASES:
        mode = MASK_MODE_ALIASES[args.mask_mode]
        print(f"note: --mask_mode {args.mask_mode} is the original package's name for {mode}; "
              f"using --mask_mode {mode}.", file=sys.stderr)
        return mode
    return args.mask_mode


def config_from_args(args) -> TrainConfig:
    if args.use_4bit and args.use_8bit:
        raise FnwebError("Choose one of --use_4bit and --use_8bit.")
    targets = None
    if args.lora_target_modules:
        targets = [t for part in args.lora_target_modules for t in part.split(",") if t.strip()]
    model = model_alias(args.model_name_or_path)
    return TrainConfig(
        dataset=args.dataset_name_or_path, output_dir=args.output_dir, dataset_config=args.dataset_config,
        dataset_split=args.dataset_split, overwrite=args.overwrite_output_dir, model_id=model,
        dtype=args.torch_dtype, device=args.device,
        quantization="4bit" if args.use_4bit else "8bit" if args.use_8bit else "none",
        revision=args.revision, trust_remote_code=args.trust_remote_code, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=targets,
        mask_mode=mask_mode_of(args), control_of=args.random_control_of, template_path=args.ica_template_path,
        component_ids=component_ids_from_text(args.ica_component_ids), mask_layers=args.ica_mask_layers,
        preserve_scope=args.preserve_scope,
        restrict_updates=args.restrict_updates, mask_activations=args.mask_activations,
        ica_components=args.ica_components,
        ica_percentile=args.ica_percentile, site=args.ica_site, max_steps=args.max_steps,
        num_epochs=args.num_train_epochs, learning_rate=args.learning_rate, lr_schedule=args.lr_scheduler_type,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        batch_size=args.per_device_train_batch_size, grad_accum=args.gradient_accumulation_steps,
        max_seq_len=args.max_seq_length, validation_split=args.validation_split, loss_on=args.loss_on,
        prompt_format=args.template_format, seed=args.seed, eval_interval=args.eval_steps,
        gradient_checkpointing=args.gradient_checkpointing, max_eval_examples=args.max_eval_examples,
        general_per_set=args.general_samples,
    )


def _printer(quiet: bool, is_main: bool):
    last = {"t": 0.0}

    def show(event: dict) -> None:
        if quiet or not is_main:
            return
        kind, now = event.get("event"), time.monotonic()
        if kind == "step":
            if now - last["t"] < 1.0 and event["step"] not in (1, event["total"]):
                return
            last["t"] = now
            print(f"  step {event['step']}/{event['total']}  loss {event['loss']:.4f}  lr {event['lr']:.2e}  "
                  f"{event['tokens_per_s']:,.0f} tok/s  about {event['seconds_left']:.0f} s left", flush=True)
        elif kind == "eval":
            print(f"  step {event['step']}/{event['total']}  eval loss {event['eval_loss']:.4f}", flush=True)
        elif kind == "phase":
            print(f"  {event['message']}", flush=True)

    return show


def report(result) -> str:
    s = result.summary
    lines = [
        f"Run saved to: {result.folder} ({result.message})",
        f"Mask: {s['mask']} ({100 * s['masked_share']:.2f} % of the site's channels zeroed); "
        f"{s['trainable_parameters']:,} trainable parameters; {s['seconds_per_step'] or 0:.3f} s/step",
        f"Learning: task loss on {s['task_examples']} {s['task_set']} examples; "
        f"forgetting: {s['general_examples']} held-out prompts from {', '.join(s['general_sets']) or 'none'}",
        "",
        figures_table(s),
    ]
    return "\n".join(lines)


@contextmanager
def _stop_on_ctrl_c():
    """First Ctrl-C: stop and save after the step in progress; a second one aborts."""
    stop = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(_signum, _frame):
        if stop.is_set:
            raise KeyboardInterrupt
        stop.set()
        print("Stopping after this step and saving the adapter (Ctrl-C again to abort).", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        check_launch("fnweb.cli.fnsft")
        _check_push(args)
        run = prepare(config_from_args(args))
        show = _printer(args.quiet, run.dist.is_main)
        if run.dist.is_main:
            print(run.lm.summary_line())
            print(f"{run.data.describe()}; {run.total_steps} steps"
                  + (f" on {run.dist.world} processes" if run.dist.world > 1 else ""), flush=True)
        try:
            with _stop_on_ctrl_c() as stop:
                result = execute(run, stop=stop, on_event=show)
        except Stopped as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print(f"error: interrupted; {run.config.output_dir}/state.json records the run as failed.", file=sys.stderr)
            return 130
        if run.dist.is_main:
            print()
            print(report(result))
            if args.push_to_hub:
                _push(args, result.folder)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
