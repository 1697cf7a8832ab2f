"""The bad-input table of tests/test_bad_inputs.py: each command or handler, what it is given, what it must say.

A ``Case`` names a command (``COMMANDS``) or an app handler (``FORMS``), what it is
given (a command's arguments, added to its ``BASE`` line unless ``full``; a handler's
form fields that differ from its ``FORMS`` defaults) and the message expected: a
fragment of the one error line (one starting with ``error:`` must start the line; a
handler's message must start with it), or ``OK`` where the input must work (the
original's command lines, real-world files). Placeholders (``{model}``, ``{bin}``,
``{latin}``, ``{excel}``, ``{template}``, ``{frac}``, ``{out}``, ...) name the inputs
the test module makes; ``{dataset}`` and ``{tpl}`` in a BASE line are the case's own or
``DEFAULTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

OK = None  # the case must succeed
NO_CUDA = not torch.cuda.is_available()

COMMANDS = {"buildtemplates": "fnweb.cli.buildtemplates", "fnsft": "fnweb.cli.fnsft",
            "fnexperiment": "fnweb.cli.experiment", "explain": "fnweb.cli.explain"}
# What every case of a command starts from (small and fast); a case's own arguments come after
# (argparse keeps the last value of an option); ``{dataset}`` and ``{tpl}`` are the case's or these.
BASE = {
    "buildtemplates": "{model} {dataset} --output_file {out}/t.json --quiet --stability_runs 0 --card_contexts 0 "
                      "--ica_components 2 --ica_template_samples_per_ds 4 --max_seq_length 24",
    "fnsft": "--model_name_or_path {model} --dataset_name_or_path {dataset} --output_dir {out}/run --max_steps 1 "
             "--quiet --lora_r 2 --general_samples 0 --max_eval_examples 2 --max_seq_length 48",
    "fnexperiment": "{model} {tpl} {dataset} --output {out}/exp --quiet --draws 1 --no_curve --samples_per_dataset 4 "
                    "--max_tokens 64 --no_figures",
    "explain": "{tpl}",
}
DEFAULTS = {"dataset": "builtin:code", "tpl": "{template}"}


@dataclass(frozen=True)
class Case:
    tool: str  # a command (COMMANDS) or an app handler (FORMS)
    given: str | tuple  # a command's arguments (after BASE, unless full), or a handler's form fields that change
    expect: Optional[str]  # a fragment of the one error line; OK (None): must succeed
    dataset: Optional[str] = None  # the command's {dataset}
    tpl: Optional[str] = None  # the command's {tpl}
    full: bool = False  # ``given`` is the whole command line (no BASE)
    subprocess: bool = False  # run as a real process: its stderr must be exactly the one line
    skip: Optional[str] = None  # why this case cannot run on this machine


def cli(tool, given, expect, **more) -> Case:
    return Case(tool, given, expect, **more)


def app(handler, expect, **fields) -> Case:
    return Case(handler, tuple(fields.items()), expect)


CASES = [
    # ---- buildtemplates: files ------------------------------------------------------------
    cli("buildtemplates", "", "error: Dataset file bin.jsonl looks like a binary file, not text", dataset="{bin}"),
    cli("buildtemplates", "", "error: Dataset file latin.csv is not UTF-8 (byte 0xE9 on line 2); save it as UTF-8",
        dataset="{latin}"),
    cli("buildtemplates", "", "error: Dataset file cut.parquet is not a readable Parquet file (damaged, or not "
        "Parquet)", dataset="{cut}"),
    cli("buildtemplates", "", "error: Dataset file utf16.jsonl is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8.",
        dataset="{utf16}"),
    cli("buildtemplates", "", "(a zip archive, such as an Excel workbook: export it as 'CSV UTF-8' instead)",
        dataset="{workbook}"),
    cli("buildtemplates", "", "error: Dataset {empty} is empty: it has no records.", dataset="{empty}"),
    cli("buildtemplates", "", "error: Dataset file not found: ", dataset="{missing}"),
    cli("buildtemplates", "", "error: No built-in prompt set 'nope'; there are: ", dataset="builtin:nope"),
    cli("buildtemplates", "", OK, dataset="{excel}"),  # Excel's CSV UTF-8: the mark is not glued to 'question'
    # ---- buildtemplates: numbers ----------------------------------------------------------
    cli("buildtemplates", "--threshold zscore --zscore_alpha nan",
        "error: The z-score alpha must be a finite number that is positive (got nan)."),
    cli("buildtemplates", "--threshold zscore --zscore_alpha inf",
        "error: The z-score alpha must be a finite number that is positive (got inf)."),
    cli("buildtemplates", "--zscore_alpha nan", "z-score alpha must be a finite number"),  # not ignored either
    cli("buildtemplates", "--threshold zscore --zscore_alpha 0", "error: The z-score alpha must be positive (got 0)."),
    cli("buildtemplates", "--ica_percentile nan",
        "error: The percentile must be a finite number that lies strictly between 0 and 100 (got nan)."),
    cli("buildtemplates", "--ica_percentile=-inf", "percentile must be a finite number"),
    cli("buildtemplates", "--ica_percentile 100",
        "error: The percentile must lie strictly between 0 and 100 (got 100)."),
    cli("buildtemplates", "--ica_components 0", "error: k must lie between 1 and 512 (got 0)."),
    cli("buildtemplates", "--ica_components 1.5", "argument --ica_components: invalid int value: '1.5'"),
    cli("buildtemplates", "--ica_template_samples_per_ds 0",
        "error: Samples per dataset must lie between 1 and 100000"),
    cli("buildtemplates", "--max_seq_length 1", "error: Max tokens per sample must lie between 2 and 8192 (got 1)."),
    cli("buildtemplates", "--batch_size 0", "error: Batch size must lie between 1 and 1024 (got 0)."),
    cli("buildtemplates", "--stability_runs 101", "error: Stability re-runs must lie between 0 and 100 (got 101)."),
    cli("buildtemplates", "--card_contexts -1", "error: Card contexts per component must lie between 0 and 200"),
    cli("buildtemplates", "--seed -1", "error: Seed must lie between 0 and 4294967295 (got -1)."),
    cli("buildtemplates", "--seed 4294967296", "error: Seed must lie between 0 and 4294967295 (got 4294967296)."),
    cli("buildtemplates", "--site attention", "argument --site: invalid choice: 'attention'"),
    # ---- buildtemplates: flags that do not go together, outputs, models, devices ------------
    cli("buildtemplates", "--use_4bit --use_8bit", "error: Choose one of --use_4bit and --use_8bit."),
    cli("buildtemplates", "--explain --card_contexts 0", "error: --explain prints the cards, but --card_contexts 0"),
    cli("buildtemplates", "{model} --quiet", "error: No datasets given: pass one or more datasets", full=True),
    cli("buildtemplates", "--push_to_hub 'bad repo!'", "error: 'bad repo!' is not a valid Hub repo id"),
    cli("buildtemplates", "/no/such/model builtin:code --output_file {blocker}/sub/t.json --quiet",
        "error: Cannot write the template file {blocker}/sub/t.json: {blocker} is a file, not a folder. Choose "
        "another output path.", full=True),  # the output is checked first: the model is never looked for
    cli("buildtemplates", "/no/such/model builtin:code --ica_template_output {blocker} --quiet",
        "is a file, not a folder", full=True),
    cli("buildtemplates", "/no/such/model builtin:code --output_file {inputs} --quiet",
        "error: Cannot write the template file {inputs}: it is a folder. Give a file name", full=True),
    cli("buildtemplates", "--output_file {readonly}/out/t.json", "error: Cannot write the template file "),
    cli("buildtemplates", "--device tpu9", "error: Unknown device 'tpu9'. Available here: {devices}.",
        subprocess=True),
    cli("buildtemplates", "--device cuda", "error: Device 'cuda' cannot be used: ",
        skip=None if NO_CUDA else "CUDA works here"),
    cli("buildtemplates", "--device cuda:x", "error: Unknown device 'cuda:x'."),
    cli("buildtemplates", "{corrupt} builtin:code --output_file {out}/t.json --quiet",
        "its weights are unreadable (a truncated, empty or damaged .safetensors file", full=True),
    cli("buildtemplates", "{noconfig} builtin:code --output_file {out}/t.json --quiet",
        "is a folder without config.json: it is not a saved model.", full=True),
    cli("buildtemplates", "someorg/somemodel builtin:code --output_file {out}/t.json --quiet",
        "error: Could not load model 'someorg/somemodel': the Hub is switched off here (HF_HUB_OFFLINE)", full=True),
    # ---- fnsft ----------------------------------------------------------------------------
    cli("fnsft", "", "error: Dataset file bin.jsonl looks like a binary file, not text", dataset="{bin}"),
    cli("fnsft", "", "error: Dataset file latin.csv is not UTF-8", dataset="{latin}"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_mask_layers 2:1",
        "error: Mask layers: the range '2:1' is empty (ranges are end-exclusive"),
    cli("fnsft", "--mask_mode lesion --ica_mask_layers 2:1", "the range '2:1' is empty", subprocess=True),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_mask_layers ,",
        "error: Mask layers ',' select no layer"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_mask_layers 5:5", "the range '5:5' is empty"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_mask_layers 15:",
        "error: Mask layers: the range '15:' starts past this model's last layer, 2"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_mask_layers 0,9",
        "error: Mask layer 9 is outside this model's 0..2"),
    cli("fnsft", "--mask_mode preserve --ica_mask_layers x", "error: Mask layers must look like '0,2:5,8'"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_component_ids 1 --ica_mask_layers 0",
        "error: Nothing would be masked: the chosen components (1) have no neurons in layers 0."),
    cli("fnsft", "--mask_mode lesion --ica_component_ids 1.5", "error: Component ids must be whole numbers"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_component_ids 0 7",
        "error: Component 7 is not in this template"),
    cli("fnsft", "--mask_mode lesion --ica_components 3 --ica_component_ids 5", "is not among the 3 components"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {frac}",
        "error: frac.json: component id '0.5' is not a whole number; the file was not loaded."),
    cli("fnsft", "--mask_mode lesion --ica_template_path {frac_channel}",
        "error: frac_channel.json: component 0's channel 1.5 is not a whole number"),
    cli("fnsft", "--mask_mode lesion --ica_template_path {bin_template}",
        "error: Template file bin_template.json looks like a binary file"),
    cli("fnsft", "--mask_mode preserve --ica_template_path {other}", "it was made for another model"),
    cli("fnsft", "--mask_mode erase", "argument --mask_mode: invalid choice: 'erase'"),
    cli("fnsft", "--preserve_scope everywhere", "argument --preserve_scope: invalid choice: 'everywhere'"),
    cli("fnsft", "--learning_rate nan", "error: Learning rate must be above 0 and at most 1 (got nan)"),
    cli("fnsft", "--learning_rate inf", "error: Learning rate must be above 0 and at most 1 (got inf)"),
    cli("fnsft", "--max_steps -1 --num_train_epochs nan", "error: Epochs must lie between 0.01 and 1000 (got nan)."),
    cli("fnsft", "--validation_split nan", "error: Validation split must lie between 0 and 0.5 (got nan)."),
    cli("fnsft", "--lora_dropout inf", "error: LoRA dropout must lie between 0 and 0.9 (got inf)."),
    cli("fnsft", "--lora_alpha nan", "error: LoRA alpha must lie between"),
    cli("fnsft", "--warmup_ratio nan", "error: Warmup ratio must lie between 0 and 0.5 (got nan)."),
    cli("fnsft", "--weight_decay=-inf", "error: Weight decay must lie between 0 and 1 (got -inf)."),
    cli("fnsft", "--max_grad_norm inf", "error: Max gradient norm must lie between 0 and 1e+06 (got inf)."),
    cli("fnsft", "--mask_mode lesion --ica_percentile nan", "error: ICA percentile must lie between 50 and 99.99"),
    cli("fnsft", "--seed -1", "error: Seed must lie between 0 and 4294967295 (got -1)."),
    cli("fnsft", "--max_steps 0", "error: Max steps must be -1 (use epochs) or between 1 and 1000000 (got 0)."),
    cli("fnsft", "--per_device_train_batch_size 0", "error: Batch size must lie between 1 and 1024 (got 0)."),
    cli("fnsft", "--lora_r 0", "error: LoRA rank r must lie between 1 and 1024 (got 0)."),
    cli("fnsft", "--eval_steps -1", "error: Eval interval must lie between 0 and 1e+06 (got -1)."),
    cli("fnsft", "--restrict_updates", "error: Restricted updates need a mask"),
    cli("fnsft", "--push_merged", "error: --push_merged goes with --push_to_hub and --hub_repo_id REPO."),
    cli("fnsft", "--device tpu9", "error: Unknown device 'tpu9'. Available here: "),
    cli("fnsft", "--device cuda", "error: Device 'cuda' cannot be used: ", skip=None if NO_CUDA else "CUDA works here"),
    cli("fnsft", "--model_name_or_path {corrupt}", "its weights are unreadable"),
    cli("fnsft", "--model_name_or_path /no/such/model --dataset_name_or_path builtin:code --output_dir {blocker}/run",
        "error: Cannot write the run folder {blocker}/run: ", full=True),
    # the original's command lines
    cli("fnsft", "--mask_mode lesion --ica_template_path {template} --ica_component_ids 0 1", OK),
    cli("fnsft", "--mask_mode key --ica_template_path {template} --ica_component_ids [0,1]", OK),
    cli("fnsft", "--mask_mode complement --ica_template_path {template} --ica_component_ids 0,1 "
        "--preserve_scope network_layers", OK),
    # ---- fnexperiment ---------------------------------------------------------------------
    cli("fnexperiment", "", "error: Template file bin_template.json looks like a binary file, not text",
        tpl="{bin_template}"),
    cli("fnexperiment", "", "error: frac.json: component id '0.5' is not a whole number", tpl="{frac}",
        subprocess=True),
    cli("fnexperiment", "", "error: Template file not found: ", tpl="{inputs}/none.json"),
    cli("fnexperiment", "", "it was made for another model", tpl="{other}"),
    cli("fnexperiment", "", "error: Dataset file latin.csv is not UTF-8", dataset="{latin}"),
    cli("fnexperiment", "", "error: Dataset file bin.jsonl looks like a binary file", dataset="{bin}"),
    cli("fnexperiment", "--mcq {latin}", "error: Dataset file latin.csv is not UTF-8"),
    cli("fnexperiment", "--components 1.5", "error: Component ids must be whole numbers"),
    cli("fnexperiment", "--components 9", "error: Component 9 is not in this template"),
    cli("fnexperiment", "--draws 0", "error: Random draws must lie between 1 and 200 (got 0)"),
    cli("fnexperiment", "--draws 201", "error: Random draws must lie between 1 and 200 (got 201)"),
    cli("fnexperiment", "--seed -1", "error: Seed must lie between 0 and 4294967295 (got -1)."),
    cli("fnexperiment", "--samples_per_dataset -1", "error: Prompts per set must lie between 0 (all) and"),
    cli("fnexperiment", "--batch_tokens 0", "error: Batch tokens must lie between 1 and"),
    cli("fnexperiment", "--max_tokens 1", "error: Max tokens per prompt must lie between 2 and 8192 (got 1)."),
    cli("fnexperiment", "--task mcq --task_items -1", "error: Task items must lie between 0 (all) and"),
    cli("fnexperiment", "--preserve_scope everywhere", "argument --preserve_scope: invalid choice"),
    cli("fnexperiment", "--device tpu9", "error: Unknown device 'tpu9'."),
    cli("fnexperiment", "{corrupt} {template} builtin:code --output {out}/exp", "its weights are unreadable",
        full=True),
    cli("fnexperiment", "/no/such/model /no/such/template.json builtin:code --output {blocker}/results --quiet",
        "error: Cannot write the output folder {blocker}/results: ", full=True),
    cli("fnexperiment", "--components 0 1 --preserve_scope network_layers", OK),  # the original's list form
    # ---- explain --------------------------------------------------------------------------
    cli("explain", "", "error: Template file bin_template.json looks like a binary file", tpl="{bin_template}"),
    cli("explain", "", "error: frac_channel.json: component 0's channel 1.5 is not a whole number",
        tpl="{frac_channel}"),
    cli("explain", "", "error: This template has no stored cards"),
    cli("explain", "--top 0", "error: --top must lie between 1 and 200 (got 0)."),
    cli("explain", "--model {model} --samples 0", "error: --samples must lie between 1 and 1000 (got 0)."),
    cli("explain", "--component 9", "error: Component 9 is not in this template"),
    cli("explain", "--component 1.5", "argument --component: invalid int value: '1.5'"),
    cli("explain", "--model {model} --datasets {latin}", "error: Dataset file latin.csv is not UTF-8"),
    cli("explain", "--model {corrupt}", "its weights are unreadable"),
    cli("explain", "--model {model} --device tpu9", "error: Unknown device 'tpu9'."),
    # ---- the app: Compare -----------------------------------------------------------------
    app("compare", "A component id must be a whole number (got 1.5).", components=[1.5]),
    app("compare", "A component id must be a whole number (got 'x').", components=["x"]),
    app("compare", "Component 9 is not in this template", components=[9]),
    app("compare", "Max new tokens must be a finite number (got nan).", max_new_tokens=float("nan")),
    app("compare", "Max new tokens must be a whole number (got 2.5).", max_new_tokens=2.5),
    app("compare", "Temperature must be a finite number (got inf).", decoding="sampled", temperature=float("inf")),
    app("compare", "Seed must lie between 0 and 4294967295 (got -1).", seed=-1),
    app("compare", "Random draws must lie between 1 and 20 (got 0).", draws=0),
    app("compare", "Unknown preserve scope 'everywhere'; choose all_layers or network_layers.",
        preserve_scope="everywhere"),
    app("compare", "The prompt is empty", prompt="  "),
    app("compare", "No columns chosen", columns=[]),
    app("compare", "Unknown column 'sideways'", columns=["baseline", "sideways"]),
    # ---- the app: Experiments -------------------------------------------------------------
    app("experiment", "Random draws must be a finite number (got nan).", draws=float("nan")),
    app("experiment", "Prompts per set must lie between 0 (all) and", samples=-1),
    app("experiment", "Seed must be a whole number (got 1.5).", seed=1.5),
    app("experiment", "Unknown preserve scope 'some'", preserve_scope="some"),
    app("experiment", "Unknown built-in prompt set(s): nope", builtin=["nope"]),
    app("experiment", "Dataset file bin.jsonl looks like a binary file, not text", files=["{bin}"]),
    app("experiment", "α must be a finite number from 0 to 10", intervention="scale", alpha=11),
    app("experiment", "Unknown control 'nope'; choose layer or magnitude.", control="nope"),
    app("experiment", "Unknown intervention 'boost'", intervention="boost"),
    app("experiment", "Template seeds must lie between 1 and 10 (got 11)", template_seeds=11),
    app("experiment", "This template records no build settings", template_seeds=2),
    app("experiment", "The magnitude control needs the template's capture statistics", control="magnitude"),
    app("experiment", "The mean intervention needs the template's capture statistics", intervention="mean"),
    app("experiment", "Component 9 is not in this template", dose_component="9"),
    app("experiment", "Dose-response component must be a whole number (got 1.5).", dose_component="1.5"),
    # ---- the app: Templates ---------------------------------------------------------------
    app("build", "Dataset file bin.jsonl looks like a binary file, not text", files=["{bin}"]),
    app("build", "Dataset file latin.csv is not UTF-8", files=["{latin}"]),
    app("build", "Threshold value must be a finite number (got nan).", threshold_value=float("nan")),
    app("build", "Threshold value must be a finite number (got inf).", threshold="zscore",
        threshold_value=float("inf")),
    app("build", "k must be a whole number (got 1.5).", k=1.5),
    app("build", "Seed must lie between 0 and 4294967295 (got -1).", seed=-1),
    app("build", OK, builtin=[], files=["{excel}"]),  # an Excel CSV upload builds
    app("upload", "Template file bin_template.json looks like a binary file, not text", file="{bin_template}"),
    app("upload", "Template file latin.csv is not UTF-8 (byte 0xE9 on line 2); save it as UTF-8", file="{latin}"),
    app("upload", "frac.json: component id '0.5' is not a whole number; the file was not loaded.", file="{frac}"),
    app("upload", "frac_channel.json: component 0's channel 1.5 is not a whole number", file="{frac_channel}"),
    # ---- the app: Networks ----------------------------------------------------------------
    app("networks", "Bins per layer must be a finite number (got nan).", bins=float("nan")),
    app("networks", "Bins per layer must be a whole number (got 2.5).", bins=2.5),
    app("networks", "A component must be a whole number (got '1.5').", component="1.5"),
    # ---- the app: Fine-tune ---------------------------------------------------------------
    app("finetune", "Component ids must be whole numbers like '0,3' or '0 3' (got '1.5').", mode="lesion",
        components="1.5"),
    app("finetune", "Learning rate must be a finite number (got nan).", learning_rate=float("nan")),
    app("finetune", "LoRA alpha must be a finite number (got inf).", lora_alpha=float("inf")),
    app("finetune", "Seed must lie between 0 and 4294967295 (got -1).", seed=-1),
    app("finetune", "Steps must be a whole number (got 2.5).", steps=2.5),
    app("finetune", "Dataset file bin.jsonl looks like a binary file, not text", source="file", file="{bin}"),
]


FORMS = {
    "compare": dict(prompt="Name a colour.", components=[0], columns=["baseline", "lesion", "preserve", "random"],
                    max_new_tokens=4, decoding="greedy", temperature=0.8, seed=0, draws=1, run=None,
                    preserve_scope="all_layers"),
    "experiment": dict(builtin=["factual"], files=None, samples=4, draws=1, seed=0, max_tokens=24, leave_out=True,
                       preserve_scope="all_layers"),
    "build": dict(builtin=["factual"], hub="", files=None, samples=4, max_tokens=24, k=2, site="neurons",
                  threshold="percentile", threshold_value=98.0, seed=0),
    "upload": dict(file=None),
    "networks": dict(component="all", bins=64),
    "finetune": dict(source="built-in", builtin="arithmetic", file=None, hub="", template="(computed from the "
                     "training data)", components="0", mode="none", control_of="lesion", restrict=False,
                     quantization="none", lora_r=4, lora_alpha=8, lora_dropout=0.0, steps=1, learning_rate=1e-3,
                     batch_size=2, grad_accum=1, max_seq_len=64, eval_every=1, general_per_set=1, task_examples=4,
                     k=3, ica_samples=8, seed=0),
}
# The output each handler shows its message in (the tab's message part).
MESSAGE_SLOT = {"compare": "status", "experiment": "status", "build": "progress", "upload": "progress",
                "networks": "note", "finetune": "progress"}
