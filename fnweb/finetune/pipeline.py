"""One fine-tuning run from config to run folder: check inputs, train, measure, save.

``prepare`` does every check that can fail on bad input (settings, bitsandbytes, the
output folder, the dataset, the template and its components, LoRA targets) before
anything is written or trained. ``execute`` then writes the run folder as it goes:
the mask plan (a template computed from the training prompts when none was given),
learning and forgetting figures before training, the loop, the adapter, the figures
after, the summary and the model card. A stop request saves the adapter at the next
step; a failure leaves ``state.json`` saying why. ``finetune`` is both in one call.

The model to train is always a private copy (or a model this call loaded itself):
the shared cached model is never changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import __version__
from ..archs import Layout, layout_of, unwrap
from ..errors import FnwebError, Stopped
from ..fit import finetune_line
from ..ids import hub_base_id
from ..masks import layers_from_text
from ..models import LoadedModel, ModelRequest, load_fresh
from ..progress import Progress, ProgressFn, StopFlag, no_progress
from ..prompts import PromptSource
from ..templates import Template
from .card import run_card
from .config import TrainConfig
from .data import Example, TrainData, load_training_data, read_training_pairs
from .distributed import Distributed
from .forgetting import BaseLogits, Figures, compare_figures, general_examples, measure
from .lora import attach_lora, check_quantization, describe_trainable, save_adapter, trainable_copy
from .network import MaskPlan, check_masks_something, load_template, plan_for, spec_for, template_from_pairs
from .runs import (
    CARD_FILE,
    MASK_FILE,
    SUMMARY_FILE,
    TEMPLATE_FILE,
    TRAIN_CONFIG_FILE,
    MaskFile,
    RunWriter,
    check_output_folder,
)
from .train import LoopResult, LossFn, causal_lm_loss, total_steps, train_loop


@dataclass
class PreparedRun:
    """A run whose inputs have all been checked; nothing written yet."""

    config: TrainConfig
    lm: LoadedModel
    owns_model: bool  # True: this run loaded lm itself and may train it in place
    layout: Layout
    data: TrainData
    task_examples: list[Example]  # scored for learning: the validation split (or training examples without one)
    task_set: str  # "validation" | "training"
    general: list[Example]
    general_names: list[str]
    template: Optional[Template]  # None with a mask: computed from the training prompts during the run
    dist: Distributed

    @property
    def total_steps(self) -> int:
        return total_steps(self.config, len(self.data.train), self.dist.world)

    @property
    def pad_id(self) -> int:
        tok = self.lm.tokenizer
        return next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)


@dataclass
class RunResult:
    folder: Path
    state: str  # finished | stopped
    message: str
    summary: dict
    plan: MaskPlan
    model: Optional[torch.nn.Module] = None  # the trained PEFT model; callers may drop it


def _check_targets(config: TrainConfig, model: torch.nn.Module) -> None:
    if config.restrict_updates or not config.lora_targets:
        return
    names = [name for name, _ in unwrap(model).named_modules()]
    missing = [t for t in config.lora_targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise FnwebError(
            f"LoRA target {', '.join(missing)} is not a module of this model; its default targets are: "
            f"{', '.join(layout_of(model).lora_targets)}."
        )


def prepare(config: TrainConfig, lm: Optional[LoadedModel] = None) -> PreparedRun:
    """Check every input; load the model (unless given) and the data.

    What needs no model is checked before it loads (settings, the output folder, the
    dataset, the template file and its components); what does, right after (the template's
    shape, the mask layers, LoRA targets), before any template is computed or step trained.
    """
    config.validate()
    dist = Distributed()
    check_quantization(config.quantization, dist.device(config.device))
    if dist.is_main:
        check_output_folder(Path(config.output_dir), config.overwrite)
    source = PromptSource(config.dataset, config.dataset_config, config.dataset_split)
    pairs = read_training_pairs(source, config.loss_on)
    template = load_template(config) if config.mask_mode != "none" else None
    owns = lm is None
    if lm is None:  # loaded for this run alone: trained in place, no second copy
        lm = load_fresh(ModelRequest(config.model_id, config.dtype, dist.device(config.device), config.quantization,
                                     config.revision, config.trust_remote_code))
    layout = layout_of(lm.model)
    if template is not None:
        template.check_fits(layout, lm.model_id)
    if config.mask_mode != "none":
        layers_from_text(config.mask_layers, layout.n_layers)  # bad layers fail now, not after a build
    if template is not None:
        check_masks_something(template, spec_for(config, layout.n_layers))
    _check_targets(config, lm.model)
    data = load_training_data(lm.tokenizer, source, config.max_seq_len, config.validation_split, config.loss_on,
                              config.seed, config.prompt_format, pairs)
    task_set = "validation" if data.val else "training"
    task_examples = (data.val or data.train)[: config.max_eval_examples]
    general, names = general_examples(lm.tokenizer, config)
    return PreparedRun(config, lm, owns, layout, data, task_examples, task_set, general, names, template, dist)


def _progress_listener(progress: ProgressFn, on_event: Optional[Callable[[dict], None]]):
    def listen(record: dict) -> None:
        if on_event is not None:
            on_event(record)
        if record.get("event") == "step":
            progress(Progress("training", record["step"], record["total"], "steps",
                              f"Training: loss {record['loss']:.4f}", started=time.monotonic() - record["elapsed"]))
        elif record.get("event") == "phase":
            progress(Progress(record["phase"], 0, 1, "", record.get("message", "")))
    return listen


def _plan(run: PreparedRun, writer: RunWriter, progress: ProgressFn, stop: StopFlag) -> MaskPlan:
    config = run.config
    spec = spec_for(config, run.layout.n_layers)
    if spec is None:
        plan = MaskPlan("none")
    else:
        template = run.template
        if template is None:
            writer.event({"event": "phase", "phase": "template",
                          "message": f"Computing a template from {min(config.ica_samples, len(run.data.train_pairs))} "
                                     "training prompts"})
            template = template_from_pairs(run.lm, config, run.data.train_pairs, progress, stop)
            check_masks_something(template, spec)
        site = template.infer_site(run.layout)
        plan = plan_for(template, spec, config.mask_mode, site, config.restrict_updates, config.mask_activations)
        writer.write_text(TEMPLATE_FILE, template.to_json())
    writer.write_json(MASK_FILE, MaskFile.of(plan, plan.share(run.layout)).to_dict())
    return plan


def _figures_event(writer: RunWriter, when: str, figures: Figures) -> None:
    writer.event({"event": "figures", "when": when, **figures.to_dict()})


def _summary(run: PreparedRun, plan: MaskPlan, loop: LoopResult, before: Figures, after: Figures,
             trainable: dict, state: str) -> dict:
    return {
        "state": state, "steps": loop.steps, "total_steps": loop.total_steps, "mask": plan.label(),
        "mask_mode": plan.mask_mode, "restrict_updates": plan.restrict_updates,
        "masked_share": plan.share(run.layout), "dataset": run.data.source_label, "model": run.lm.model_id,
        "train_examples": len(run.data.train), "task_examples": len(run.task_examples), "task_set": run.task_set,
        "general_sets": run.general_names, "general_examples": len(run.general),
        "train_seconds": round(loop.seconds, 3),
        "seconds_per_step": None if loop.seconds_per_step is None else round(loop.seconds_per_step, 4),
        "tokens_per_s": round(loop.tokens / max(loop.seconds, 1e-9), 1), "final_train_loss": loop.last_loss,
        "final_eval_loss": loop.last_eval_loss, **trainable, **compare_figures(before, after),
        "fnweb_version": __version__,
    }


def execute(run: PreparedRun, progress: ProgressFn = no_progress, stop: Optional[StopFlag] = None,
            on_event: Optional[Callable[[dict], None]] = None, loss_fn: LossFn = causal_lm_loss) -> RunResult:
    """Train a prepared run, writing its folder as it goes."""
    config, dist, stop = run.config, run.dist, stop or StopFlag()
    folder = Path(config.output_dir)
    writer = RunWriter.create(folder, config.overwrite, dist.is_main, _progress_listener(progress, on_event))
    writer.write_json(TRAIN_CONFIG_FILE, config.to_dict())
    writer.set_state("running", step=0, total_steps=run.total_steps, message="Preparing")
    loop = None
    try:
        plan = _plan(run, writer, progress, stop)
        writer.event({"event": "start", "total_steps": run.total_steps, "mask": plan.label(),
                      "train_examples": len(run.data.train), "task_examples": len(run.task_examples),
                      "general_examples": len(run.general), "data": run.data.describe(), "processes": dist.world})
        model = attach_lora(trainable_copy(run.lm, config, run.owns_model), config, run.layout, plan)
        trainable = describe_trainable(model)
        writer.event({"event": "phase", "phase": "memory", "message": finetune_line(
            model, trainable["trainable_parameters"], config.batch_size,
            max((len(e.input_ids) for e in run.data.train), default=1))})
        writer.event({"event": "phase", "phase": "baseline", "message": "Measuring the model before training"})
        base = BaseLogits()  # the unchanged model's logits, computed once for before and after
        before = measure(model, run.task_examples, run.general, plan, config, run.pad_id, stop, base, untrained=True)
        _figures_event(writer, "before", before)
        loop = train_loop(model, run.data, run.task_examples if run.task_set == "validation" else [], config, plan,
                          run.pad_id, writer.event, stop, loss_fn, dist)
        model = dist.unwrap(model)
        state = "stopped" if loop.stopped else "finished"
        writer.set_state("running", step=loop.steps, message="Saving the adapter")
        if dist.is_main:
            save_adapter(model, folder, hub_base_id(config.model_id))
        writer.event({"event": "phase", "phase": "evaluating", "message": "Measuring the model after training"})
        after = measure(model, run.task_examples, run.general, plan, config, run.pad_id, base=base)
        _figures_event(writer, "after", after)
        summary = _summary(run, plan, loop, before, after, trainable, state)
        writer.write_json(SUMMARY_FILE, summary)
        mask = MaskFile.of(plan, plan.share(run.layout))
        adapter = {"base_model_name_or_path": hub_base_id(config.model_id)}
        writer.write_text(CARD_FILE, run_card(config.to_dict(), summary, mask, plan.template, adapter))
        message = (f"Stopped at step {loop.steps} of {loop.total_steps}; the adapter as of step {loop.steps} was saved."
                   if loop.stopped else f"Finished {loop.steps} steps.")
        writer.event({"event": "end", "state": state, "message": message, "step": loop.steps})
        writer.set_state(state, step=loop.steps, message=message)
        dist.barrier()
        return RunResult(folder, state, message, summary, plan, model)
    except Stopped:
        message = "Stopped before the first step: no adapter was saved."
        writer.event({"event": "end", "state": "stopped", "message": message, "step": 0})
        writer.set_state("stopped", step=0, message=message)
        raise Stopped(message) from None
    except BaseException as exc:
        message = str(exc) if isinstance(exc, FnwebError) else f"{type(exc).__name__}: {exc}"
        step = loop.steps if loop is not None else None
        writer.event({"event": "end", "state": "failed", "message": message, "step": step})
        writer.set_state("failed", message=message)
        raise


def finetune(config: TrainConfig, lm: Optional[LoadedModel] = None, progress: ProgressFn = no_progress,
             stop: Optional[StopFlag] = None, on_event: Optional[Callable[[dict], None]] = None,
             loss_fn: LossFn = causal_lm_loss) -> RunResult:
    """Check, train, measure and save one run (see ``prepare`` and ``execute``)."""
    return execute(prepare(config, lm), progress, stop, on_event, loss_fn)
