"""The Fine-tune tab's form as a ``TrainConfig``: every field checked, with the bounds of a shared web server.

``config_from_form`` reads the form's record (field name -> value): the dataset (a
built-in set, an uploaded file or one Hub dataset), the template (the visitor's, or
computed from the training prompts), the mask and the training settings, and checks
them here and through ``TrainConfig.validate`` before anything runs. It knows nothing
about Gradio components.
"""

from __future__ import annotations

from typing import Optional

from ..errors import FnwebError
from ..finetune import TrainConfig
from ..finetune.config import NO_MASK
from ..interventions import DEFAULT_INTERVENTION
from ..masks import component_ids_from_text
from ..prompts import BUILTIN_PREFIX, PromptSource, builtin_sets
from .forms import parse_hub, real, upload_paths, whole
from .state import Session

SOURCES = ("built-in", "file", "Hub")
ON_THE_FLY = "(computed from the training data)"
# Bounds for a shared web server (the engine's own bounds are wider, for the CLI).
LIMITS = {"Steps": (1, 5000), "Batch size": (1, 64), "Gradient accumulation": (1, 64),
          "Max sequence length": (16, 4096), "LoRA rank r": (1, 256), "Forgetting prompts per set": (0, 64),
          "Task examples scored": (1, 512), "Components computed (k)": (1, 64), "Prompts for the template": (2, 1000)}


def _bounded(value, what: str, number=whole):
    low, high = LIMITS[what]
    got = number(value, what)
    if not low <= got <= high:
        raise FnwebError(f"{what} must lie between {low} and {high} (got {got}).")
    return got


def dataset_from_form(form: dict) -> PromptSource:
    source = form["source"]
    if source == "built-in":
        builtin = form["builtin"]
        if builtin not in builtin_sets():
            raise FnwebError(f"Unknown built-in set '{builtin}'; choose one of: {', '.join(builtin_sets())}.")
        return PromptSource(BUILTIN_PREFIX + builtin)
    if source == "file":
        paths = upload_paths(form["file"])
        if not paths:
            raise FnwebError("No dataset file chosen: upload a .json, .jsonl, .csv or .parquet file with "
                             "prompt/response fields, or pick a built-in set.")
        return PromptSource(str(paths[0]))
    if source == "Hub":
        sources = parse_hub(form["hub"])
        if len(sources) != 1:
            raise FnwebError("Enter one Hub dataset: 'name' or 'name, config, split'." if not sources else
                             "Enter one Hub dataset only (a fine-tune trains on one dataset).")
        return sources[0]
    raise FnwebError(f"Choose where the dataset comes from: {', '.join(SOURCES)} (got '{source}').")


def _template_path(session: Session, template: Optional[str], mode: str) -> Optional[str]:
    if mode == NO_MASK or template in (None, "", ON_THE_FLY):
        return None
    return str(session.get(template).path)


def config_from_form(session: Session, form: dict) -> TrainConfig:
    """The run's settings from the form's record and the visitor's model, checked (the output folder comes later).

    Field names are those of the Fine-tune tab's ``Form``; this function owns their mapping onto ``TrainConfig``.
    """
    request = session.model
    if request is None:
        raise FnwebError("No model loaded: choose a model in the bar at the top and press Load.")
    data, mode = dataset_from_form(form), form["mode"]
    config = TrainConfig(
        dataset=data.name, dataset_config=data.config, dataset_split=data.split or "train", output_dir="(per run)",
        model_id=request.model_id, dtype=request.dtype, device=request.device,
        quantization=form["quantization"] or "none", revision=request.revision,
        trust_remote_code=request.trust_remote_code,
        lora_r=_bounded(form["lora_r"], "LoRA rank r"), lora_alpha=real(form["lora_alpha"], "LoRA alpha"),
        lora_dropout=real(form["lora_dropout"], "LoRA dropout"),
        mask_mode=mode, control_of=form["control_of"] or DEFAULT_INTERVENTION,
        template_path=_template_path(session, form["template"], mode),
        component_ids=component_ids_from_text(form["components"] or "") if mode != NO_MASK else [0],
        restrict_updates=bool(form["restrict"]),
        ica_components=_bounded(form["k"], "Components computed (k)"),
        ica_samples=_bounded(form["ica_samples"], "Prompts for the template"),
        max_steps=_bounded(form["steps"], "Steps"), learning_rate=real(form["learning_rate"], "Learning rate"),
        batch_size=_bounded(form["batch_size"], "Batch size"),
        grad_accum=_bounded(form["grad_accum"], "Gradient accumulation"),
        max_seq_len=_bounded(form["max_seq_len"], "Max sequence length"),
        eval_interval=None if form["eval_every"] in (None, "") else whole(form["eval_every"], "Eval every"),
        general_per_set=_bounded(form["general_per_set"], "Forgetting prompts per set"),
        max_eval_examples=_bounded(form["task_examples"], "Task examples scored"), seed=whole(form["seed"], "Seed"),
    )
    return config.validate()


# ---- the visitor's runs -----------------------------------------------------------------
