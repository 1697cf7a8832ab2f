"""Helpers of the fine-tuning tests: a planted template, small configs, fnsft arguments.

The one-thread fixture they use is ``one_thread`` in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

from fnweb.archs import layout_of
from fnweb.finetune import TrainConfig
from fnweb.templates import Template, TemplateMeta


def planted_template(model, site: str = "neurons", model_id: str = "tiny-llama") -> Template:
    """Known neurons per component: 0 small, 1 disjoint from 0, 2 a quarter of every layer."""
    layout = layout_of(model)
    width = layout.width(site)
    layers = list(range(layout.n_layers))
    components = {
        0: {0: [1, 5, 9], 1: [2, 3], 2: [0, width - 1]},
        1: {0: [20, 21], 2: [7, 8, 30]},
        2: {layer: list(range(layer, width, 4)) for layer in layers},
    }
    meta = TemplateMeta(model_id=model_id, site=site, n_layers=layout.n_layers, width=width, k=3,
                        threshold="percentile", threshold_value=98.0, architecture=layout.model_type)
    return Template(layers=layers, width=width, components=components, meta=meta)


def save_planted(model, folder: Path, site: str = "neurons") -> str:
    return str(planted_template(model, site).save(Path(folder) / f"planted-{site}.json"))


def small_config(output_dir, **changes) -> TrainConfig:
    """A few fast steps on a built-in set that a tiny model visibly learns."""
    config = dict(
        dataset="builtin:sentiment", output_dir=str(output_dir), model_id="tiny-llama", max_steps=6,
        learning_rate=2e-2, batch_size=4, lora_r=4, lora_dropout=0.0, eval_interval=0, general_per_set=1,
        max_eval_examples=8, ica_components=3, ica_percentile=90.0, ica_samples=16, seed=0,
    )
    config.update(changes)
    return TrainConfig(**config)


def step_losses(folder) -> list[float]:
    from fnweb.finetune import read_events

    return [e["loss"] for e in read_events(folder) if e["event"] == "step"]


def args_for(model_dir, out, *extra) -> list[str]:
    """fnsft's arguments for a few fast steps on a built-in set, plus ``extra``."""
    return ["--model_name_or_path", str(model_dir), "--dataset_name_or_path", "builtin:sentiment",
            "--output_dir", str(out), "--max_steps", "4", "--learning_rate", "2e-2", "--lora_r", "4",
            "--general_samples", "1", "--max_eval_examples", "8", *extra]
