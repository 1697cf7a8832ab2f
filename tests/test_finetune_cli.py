"""The fnsft command: end to end on a tiny model folder, its flags, its errors, and 4-bit QLoRA."""

import json
import os
import subprocess
import sys

import pytest
import tiny
import torch
from ftkit import args_for, small_config

from fnweb.cli.fnsft import config_from_args, main, parser
from fnweb.errors import FnwebError
from fnweb.finetune import finetune, load_run
from fnweb.finetune.lora import check_quantization

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread


def test_fnsft_trains_end_to_end_and_prints_learning_and_forgetting(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(args_for(tiny_model_dir, out, "--mask_mode", "preserve", "--ica_components", "3",
                         "--ica_percentile", "90", "--ica_component_ids", "[0, 2]", "--restrict_updates",
                         "--eval_steps", "2"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "step 1/4" in printed and "eval loss" in printed and "Finished 4 steps" in printed
    assert "Task loss, validation split" in printed and "KL from the base model" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mask_mode"] == "preserve" and summary["restrict_updates"]
    assert summary["learning"]["task_loss_after"] < summary["learning"]["task_loss_before"]
    mask = json.loads((out / "mask.json").read_text())
    assert mask["components"] == [0, 2] and mask["mode"] == "preserve"
    run = load_run(out)  # loads the base from the recorded folder, with the mask
    assert run.plan.masks and run.config.model_id == str(tiny_model_dir)

    again = main(args_for(tiny_model_dir, out))
    assert again == 2 and "already exists" in capsys.readouterr().err


def test_flag_defaults_and_forms():
    args = parser().parse_args(["--dataset_name_or_path", "builtin:code", "--output_dir", "o"])
    config = config_from_args(args)
    assert config.quantization == "none"  # both quantization flags default off (the original's fault 5)
    assert config.mask_mode == "none" and config.component_ids == [0] and config.num_epochs == 3
    for flags, expected in ((["--use_8bit", "--no-use_8bit"], "none"), (["--use_4bit"], "4bit"),
                            (["--use_8bit"], "8bit")):
        args = parser().parse_args(["--dataset_name_or_path", "d", "--output_dir", "o", *flags])
        assert config_from_args(args).quantization == expected
    args = parser().parse_args(["--dataset_name_or_path", "d", "--output_dir", "o", "--ica_component_ids", "[0, 3]",
                                "--lora_target_modules", "q_proj,v_proj", "down_proj", "--model_name_or_path",
                                "embedded"])
    config = config_from_args(args)
    assert config.component_ids == [0, 3] and config.lora_targets == ["q_proj", "v_proj", "down_proj"]
    assert config.model_id.startswith("embedded:")
    args = parser().parse_args(["--dataset_name_or_path", "d", "--output_dir", "o", "--use_4bit", "--use_8bit"])
    with pytest.raises(FnwebError, match="one of --use_4bit and --use_8bit"):
        config_from_args(args)


def test_fnsft_reports_bad_input_on_one_line(tiny_model_dir, tmp_path, capsys):
    assert main(args_for(tiny_model_dir, tmp_path / "run", "--learning_rate", "0")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Learning rate") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_fnsft_is_a_console_entry_point():
    done = subprocess.run([sys.executable, "-m", "fnweb.cli.fnsft", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--ica_component_ids" in done.stdout and "--no-use_4bit" in done.stdout


def wide_tiny_dir(folder):
    """A tiny Llama 64 wide: bitsandbytes' CPU 4-bit kernels need rows of at least one 64-block."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = tiny.make_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
                         eos_token_id=2, bos_token_id=1, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_qlora_4bit_trains_where_bitsandbytes_runs(tmp_path):
    try:
        check_quantization("4bit")
    except FnwebError as exc:
        pytest.skip(f"bitsandbytes cannot run 4-bit here, and says so: {exc}")
    model_dir = wide_tiny_dir(tmp_path / "model")
    config = small_config(tmp_path / "run", model_id=str(model_dir), quantization="4bit", max_steps=3,
                          mask_mode="none")
    result = finetune(config)
    assert result.state == "finished" and (result.folder / "adapter_model.safetensors").exists()
    base = result.model.get_base_model()
    assert "4bit" in type(base.model.layers[0].mlp.down_proj.base_layer).__name__
    assert result.summary["learning"]["task_loss_after"] < result.summary["learning"]["task_loss_before"]


def _accelerate(*flags: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fnweb.cli.fnsft"]


@pytest.mark.slow
def test_fnsft_runs_under_accelerate_launch_with_two_processes(tiny_model_dir, tmp_path):
    # --multi_gpu is accelerate's torchrun launcher: with no GPU visible, two CPU processes over gloo.
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([*_accelerate("--multi_gpu"), *args_for(tiny_model_dir, out, "--max_steps", "2")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Run saved to") == 1  # only the main process reports and writes
    assert " steps on 2 processes" in done.stdout
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["processes"] for e in events if e["event"] == "start"] == [2]  # both joined the process group
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert json.loads((out / "state.json").read_text())["state"] == "finished"


def test_fnsft_under_accelerate_launch_cpu_that_starts_one_process_says_how_to_start_two(tiny_model_dir, tmp_path):
    # Without MPI, accelerate's --cpu runs the script once however many processes are asked for.
    out = tmp_path / "run"
    done = subprocess.run([*_accelerate("--cpu", "--quiet"), *args_for(tiny_model_dir, out, "--max_steps", "2")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0 and not out.exists()  # the launcher's code; fnsft exited with 2
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: accelerate launch --cpu started one process, not the 2 asked for (without MPI it runs the script "
        "once): launch CPU processes with `CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes N -m "
        "fnweb.cli.fnsft ...` or `torchrun --nproc_per_node N -m fnweb.cli.fnsft ...`."]


def test_the_originals_forms_run_and_the_preserve_scope_is_recorded(tiny_model_dir, tmp_path, capsys):
    from fnweb.archs import layout_of
    from fnweb.templates import Template, TemplateMeta

    model = tiny.make_model("llama")
    width, layers = layout_of(model).width("neurons"), [0, 1, 2]
    meta = TemplateMeta(model_id=str(tiny_model_dir), site="neurons", n_layers=3, width=width, k=2,
                        threshold="percentile", threshold_value=98.0)
    template = Template(layers, width, {0: {0: [1, 5]}, 1: {2: [3, 4, 9]}}, meta=meta).save(tmp_path / "t.json")
    out = tmp_path / "run"
    code = main(args_for(tiny_model_dir, out, "--max_steps", "1", "--ica_template_path", str(template),
                         "--mask_mode", "complement", "--ica_component_ids", "0", "1",
                         "--preserve_scope", "network_layers"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert ("note: --mask_mode complement is the original package's name for preserve; using --mask_mode preserve."
            in captured.err.splitlines())
    mask = json.loads((out / "mask.json").read_text())
    assert mask["components"] == [0, 1] and mask["mode"] == "preserve" and mask["preserve_scope"] == "network_layers"
    assert json.loads((out / "train_config.json").read_text())["preserve_scope"] == "network_layers"
    plan = load_run(out).plan
    assert sorted(plan.masks) == [0, 2]  # layer 1 holds no network channel: left untouched, as the original did
    assert plan.spec.preserve_scope == "network_layers" and "(network_layers)" in plan.label()


def test_mask_mode_aliases_and_component_id_forms_parse():
    base = ["--dataset_name_or_path", "d", "--output_dir", "o"]
    for alias, mode in (("key", "lesion"), ("complement", "preserve")):
        assert config_from_args(parser().parse_args([*base, "--mask_mode", alias])).mask_mode == mode
    for ids in (["0", "1", "2"], ["0,1,2"], ["[0,1,2]"], ["[0,", "1,", "2]"]):
        assert config_from_args(parser().parse_args([*base, "--ica_component_ids", *ids])).component_ids == [0, 1, 2]
    assert config_from_args(parser().parse_args(base)).preserve_scope == "all_layers"
