"""A finished run loaded for generation: its adapter on a private copy of its base model, with its mask.

``load_run`` reads the run folder (``fnweb.finetune.runs``: the mask plan from
``mask.json`` and ``template.json``), loads the base model it names and puts the
adapter on a copy, so the shared cached model never changes; ``FinetunedRun.masked``
applies the run's mask as in training (the original saved masked runs that then ran
unmasked). A run folder is data: it may come from a stranger (the Hub), so nothing in
it switches on ``trust_remote_code``; that is the caller's own setting, off unless
passed. This module knows nothing about training or sharing runs.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import FnwebError
from ..masks import apply_masks
from ..models import LoadedModel, ModelRequest, load_model
from .config import TrainConfig
from .network import MaskPlan
from .runs import SUMMARY_FILE, TRAIN_CONFIG_FILE, load_plan, read_json


@dataclass
class FinetunedRun:
    """A run loaded for generation: the adapter on a private copy of the base, and its mask."""

    folder: Path
    config: TrainConfig
    plan: MaskPlan
    model: object  # a PeftModel (or the merged model)
    tokenizer: object
    summary: Optional[dict]

    @contextmanager
    def masked(self) -> Iterator[None]:
        """The run's mask, applied as in training (no mask for a plain LoRA run)."""
        with apply_masks(self.model, self.plan.hooks, self.plan.site):
            yield

    @property
    def label(self) -> str:
        return f"{self.folder.name}: LoRA, {self.plan.label()}"

    def loaded_model(self) -> LoadedModel:
        """The fine-tuned model as a LoadedModel (the caller applies ``masked()`` around its use)."""
        return LoadedModel(self.model, self.tokenizer, ModelRequest(model_id=f"run:{self.folder}"))


def check_remote_code(folder: Path, config: TrainConfig, trust_remote_code: bool) -> None:
    """Refuse a run whose base model was loaded with custom code unless the caller allows that code."""
    if config.trust_remote_code and not trust_remote_code:
        raise FnwebError(
            f"The run {Path(folder).name} was trained on {config.model_id} with custom model code "
            "(trust_remote_code). fnweb never runs code because a run's own files ask for it. If you trust "
            f"{config.model_id}'s code, pass the flag yourself: load_run(folder, trust_remote_code=True) (or "
            "push_run(..., trust_remote_code=True); CLI: --trust_remote_code)."
        )


def load_run(folder: str | Path, lm: Optional[LoadedModel] = None, merge: bool = False,
             trust_remote_code: bool = False) -> FinetunedRun:
    """Load a run's adapter onto a private copy of its base model, ready to generate with its mask.

    Without ``lm``, the base model named in the run is loaded with the caller's
    ``trust_remote_code`` (off by default), whatever the run's train_config.json says.
    """
    from ..archs import layout_of
    from .lora import load_adapter

    folder = Path(folder)
    if not (folder / TRAIN_CONFIG_FILE).exists():
        raise FnwebError(f"{folder} is not an fnweb run folder (no {TRAIN_CONFIG_FILE}).")
    config = TrainConfig.from_dict(read_json(folder / TRAIN_CONFIG_FILE) or {})
    if lm is None:
        check_remote_code(folder, config, trust_remote_code)
        lm = load_model(ModelRequest(config.model_id, config.dtype, config.device, "none", config.revision,
                                     trust_remote_code))
    plan = load_plan(folder)
    if plan.template is not None:
        plan.template.check_fits(layout_of(lm.model), lm.model_id)
    model = load_adapter(copy.deepcopy(lm.model), folder)  # the shared model is never changed
    if merge:
        model = model.merge_and_unload()  # a private copy: merging changes only it
    return FinetunedRun(folder, config, plan, model, lm.tokenizer, read_json(folder / SUMMARY_FILE))
