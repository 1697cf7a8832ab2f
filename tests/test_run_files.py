"""The run folder's one home: mask.json's one codec, read the same way by every reader, and round trips.

Readers of mask.json: ``read_run`` (Hub pushes and downloads, the Share tab), ``load_plan``
(``load_run``, merging) and the run card (its ``mask-MODE`` tag and ``fnweb.mask`` block).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from huggingface_hub import ModelCard

from fnweb.channel_stats import ChannelStats
from fnweb.errors import FnwebError
from fnweb.finetune import runs
from fnweb.finetune.card import run_card
from fnweb.finetune.config import MASK_MODES, NO_MASK, RANDOM
from fnweb.finetune.network import plan_for
from fnweb.finetune.runs import MASK_FILE, MaskFile, load_plan, read_run
from fnweb.masks import MaskSpec
from fnweb.templates import Template, TemplateMeta


def template() -> Template:
    meta = TemplateMeta(model_id="org/base", site="neurons", n_layers=3, width=64, k=3, threshold="percentile",
                        threshold_value=98.0, datasets=[], samples_per_dataset=10, seed=0)  # stats are kept with meta
    made = Template([0, 1, 2], 64, {0: {0: [1, 5], 1: [2]}, 1: {1: [2, 3]}, 2: {2: [7, 8, 9]}}, meta=meta)
    spread = np.random.default_rng(0).uniform(0.5, 2.0, 3 * 64)
    made.stats = ChannelStats.from_moments([0, 1, 2], np.linspace(-1, 1, 3 * 64), spread, tokens=50)  # for mean
    return made


def run_folder(folder: Path, mask) -> Path:
    """A run folder with every required file; ``mask`` is written as mask.json's JSON value."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4,
                                                            "base_model_name_or_path": "org/base"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)  # read_run checks it is there, not its weights
    template().save(folder / "template.json")
    (folder / "train_config.json").write_text(json.dumps({"model_id": "org/base", "dataset": "builtin:code"}))
    (folder / MASK_FILE).write_text(json.dumps(mask))
    return folder


def what_each_reader_sees(folder: Path) -> dict:
    """(mask_mode, spec) as read_run, load_plan and the run card read the folder's mask.json."""
    files = read_run(folder)
    plan = load_plan(folder)
    card = ModelCard(run_card(files.train_config, files.summary, files.mask_file, files.template,
                              files.adapter_config, repo_id="alice/run"))
    tag = next(t[len("mask-"):] for t in card.data.tags if t.startswith("mask-"))
    block = card.data.fnweb["mask"]
    card_spec = MaskSpec(**{f.name: (tuple(block[f.name]) if isinstance(block[f.name], list) else block[f.name])
                            for f in fields(MaskSpec)}) if "components" in block else None
    return {"read_run": (files.mask_file.mask_mode, files.mask), "load_plan": (plan.mask_mode, plan.spec),
            "card": (tag, card_spec)}


# What fnweb writes, and files written by hand (no mask_mode): each with the one agreed reading.
CASES = {
    "fnweb lesion": ({"mask_mode": "lesion", "site": "neurons", "restrict_updates": False, "mask_activations": True,
                      "components": [0, 2], "mode": "lesion", "random_seed": None, "layers": None},
                     ("lesion", MaskSpec((0, 2), "lesion"))),
    "fnweb random": ({"mask_mode": "random", "site": "neurons", "restrict_updates": True, "mask_activations": True,
                      "components": [1], "mode": "preserve", "random_seed": 7, "layers": [0, 1]},
                     ("random", MaskSpec((1,), "preserve", 7, (0, 1)))),
    "fnweb none": ({"mask_mode": "none", "site": "neurons", "restrict_updates": False, "mask_activations": True},
                   ("none", None)),
    "none, components ignored": ({"mask_mode": "none", "components": [0], "mode": "lesion"}, ("none", None)),
    "by hand: components and mode": ({"components": [0], "mode": "lesion"}, ("lesion", MaskSpec((0,), "lesion"))),
    "by hand: components only": ({"components": [2]}, ("lesion", MaskSpec((2,), "lesion"))),
    "by hand: preserve": ({"components": [0, 1], "mode": "preserve"}, ("preserve", MaskSpec((0, 1), "preserve"))),
    "by hand: a random draw": ({"components": [0], "mode": "lesion", "random_seed": 3},
                               ("random", MaskSpec((0,), "lesion", 3))),
    "by hand: mode none": ({"components": [0], "mode": "none"}, ("none", None)),
    "by hand: no components": ({"site": "neurons"}, ("none", None)),
    "null": (None, ("none", None)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_reads_mask_json_the_same_way(tmp_path, case):
    data, expected = CASES[case]
    seen = what_each_reader_sees(run_folder(tmp_path / "run", data))
    assert seen == {"read_run": expected, "load_plan": expected, "card": expected}


@pytest.mark.parametrize("mask_mode", [m for m in MASK_MODES if m != NO_MASK])  # every intervention, and random
def test_what_fnweb_writes_for_every_mask_mode_reads_back_as_the_plan_it_trained_with(tmp_path, mask_mode):
    mode = "preserve" if mask_mode == RANDOM else mask_mode
    spec = MaskSpec((0, 2), mode, 11 if mask_mode == RANDOM else None, (1, 2))
    plan = plan_for(template(), spec, mask_mode, "neurons", True, False)
    written = MaskFile.of(plan, 0.0123456789)
    assert written.to_dict()["masked_share"] == 0.012346  # for people: rounded
    folder = run_folder(tmp_path / "run", json.loads(json.dumps(written.to_dict())))
    back = load_plan(folder)
    assert (back.mask_mode, back.spec, back.site, back.restrict_updates, back.mask_activations) == \
        (mask_mode, spec, "neurons", True, False)
    assert {layer: mask.keep.tolist() for layer, mask in back.masks.items()} == \
        {layer: mask.keep.tolist() for layer, mask in plan.masks.items()}
    assert read_run(folder).mask_file == written
    assert what_each_reader_sees(folder)["card"] == (mask_mode, spec)


def test_every_mask_spec_field_is_written_and_read_back():
    spec = MaskSpec((3, 1), "preserve", 5, (0, 4))
    data = MaskFile(RANDOM, spec=spec).to_dict()
    assert {f.name for f in fields(MaskSpec)} <= set(data)
    assert MaskFile.from_dict(json.loads(json.dumps(data))).spec == spec
    # The settings and the spec's fields sit side by side in one object: their names must never clash.
    assert not {f.name for f in fields(MaskFile)} & {f.name for f in fields(MaskSpec)}


def test_a_field_added_to_mask_spec_round_trips_with_no_change_to_the_codec(monkeypatch):
    @dataclass(frozen=True)
    class LaterSpec(MaskSpec):  # what a coming intervention kind may add: a parameter and a scope
        strength: Optional[float] = None
        scope: str = "layer"

    monkeypatch.setattr(runs, "MaskSpec", LaterSpec)
    spec = LaterSpec((0,), "lesion", None, None, strength=0.5, scope="network")
    data = json.loads(json.dumps(MaskFile("lesion", spec=spec).to_dict()))
    assert data["strength"] == 0.5 and data["scope"] == "network"
    assert MaskFile.from_dict(data).spec == spec
    assert MaskFile.from_dict({"components": [0]}).spec == LaterSpec((0,))  # an older file: the defaults


@pytest.mark.parametrize("data, message", [
    ({"mask_mode": "lesion", "mode": "preserve", "components": [0]}, "contradicts itself"),
    ({"mask_mode": "random", "mode": "lesion", "components": [0]}, "contradicts itself"),
    ({"mask_mode": "lesion", "components": [0], "random_seed": 2}, "contradicts itself"),
    ({"mask_mode": "lesion", "site": "neurons"}, "names no components"),
    ({"mask_mode": "zap", "components": [0]}, "Unknown mask mode 'zap'"),
    ({"components": [0], "mode": "zap"}, r"mask.json: Unknown mask mode 'zap'"),
    ({"components": ["a"], "mode": "lesion"}, r"mask.json: components\[0\] must be a whole number"),
    ({"components": 3}, "mask.json: components must be a list"),
    ({"components": [0], "site": "elsewhere"}, "Unknown site 'elsewhere'"),
    ([1, 2], "mask.json must be a JSON object"),
])
def test_a_malformed_mask_json_is_one_clear_line_naming_the_file(data, message):
    with pytest.raises(FnwebError, match=message) as caught:
        MaskFile.from_dict(data)
    assert "\n" not in str(caught.value)


def test_readers_name_the_folder_s_mask_json_in_their_errors(tmp_path):
    folder = run_folder(tmp_path / "run", {"mask_mode": "lesion", "mode": "preserve", "components": [0]})
    with pytest.raises(FnwebError, match=r"^The run folder: mask.json contradicts itself"):
        read_run(folder)
    with pytest.raises(FnwebError, match=r"^run/mask.json contradicts itself"):
        load_plan(folder)


def test_a_run_without_a_mask_needs_no_template_and_its_card_says_so(tmp_path):
    folder = run_folder(tmp_path / "run", {"mask_mode": "none", "site": "neurons"})
    (folder / "template.json").unlink()
    files = read_run(folder)
    assert files.mask is None and files.template is None and load_plan(folder).spec is None
    card = run_card(files.train_config, files.summary, files.mask_file, None, files.adapter_config)
    assert "# LoRA adapter for org/base: no mask" in card and "PeftModel.from_pretrained(base" in card
