"""Masked LoRA fine-tuning: train with a functional network lesioned or preserved, and measure it.

``finetune(TrainConfig(...))`` trains one run into a run folder; ``RunManager`` runs
them in the background for the app; ``load_run`` loads a finished run with its mask.
The modules: config (settings), data (examples and batches), network (the mask
plan), lora (adapters, restricted updates), train (the loop), forgetting (learning
and forgetting figures), runs (the run folder's files, mask.json's codec), card (the run's
model card, local and Hub), loading (a run loaded for generation), pipeline (one run),
manager (background runs), distributed (several processes). No UI code here.
"""

from .config import MASK_MODES, TrainConfig
from .loading import FinetunedRun, load_run
from .manager import RunManager
from .pipeline import PreparedRun, RunResult, execute, finetune, prepare
from .runs import RunInfo, list_runs, read_events

__all__ = [
    "MASK_MODES", "TrainConfig", "RunManager", "PreparedRun", "RunResult", "execute", "finetune", "prepare",
    "FinetunedRun", "RunInfo", "list_runs", "load_run", "read_events",
]
