"""Launched builds end to end: two processes find one process's maps; bad launches fail as one line.

A bad launch, and one process that crashes or is stopped, end every process and leave no file.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tiny
import torch
from test_scale import LAUNCH, launched, small_config

from fnweb.build import build_template
from fnweb.models import LoadedModel, ModelRequest
from fnweb.shards import Shards

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["builtin:factual", "builtin:code", "--ica_template_samples_per_ds", "20", "--ica_components", "4",
         "--max_seq_length", "64", "--stability_runs", "2"]


def _build_half(rank: int, world: int, init: str, out: str) -> None:
    """One of two processes: its share of a whole build; the main one saves the maps and masks."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        lm = LoadedModel(tiny.make_model("llama"), tiny.make_tokenizer(), ModelRequest(model_id="tiny-llama"))
        result = build_template(lm, small_config(card_contexts=0), shards=Shards(world, rank))
        if rank == 0:
            np.savez(out, maps=result.maps, n_tokens=result.n_tokens,
                     processes=result.template.meta.processes, components=str(result.template.components))
    finally:
        dist.destroy_process_group()


def test_a_build_shared_by_two_processes_finds_the_maps_of_one(tiny_lm, tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "two.npz")
    mp.spawn(_build_half, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    two = np.load(out)
    one = build_template(tiny_lm, small_config(card_contexts=0))
    corr = np.abs(np.corrcoef(one.maps.T, two["maps"].T)[:4, 4:])
    assert np.all(np.diag(corr) >= 0.999), np.diag(corr)  # same order and signs: the ICA saw the same scores
    assert int(two["processes"]) == 2 and int(two["n_tokens"]) == one.n_tokens
    assert str(two["components"]) == str(one.template.components)  # identical masks


def test_accelerate_launch_cpu_that_starts_one_process_says_how_to_start_two(tiny_model_dir, tmp_path):
    # Without MPI, accelerate's --cpu runs the script once however many processes are asked for.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines",
               "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--quiet", "-m", "fnweb.cli.buildtemplates",
               str(tiny_model_dir), *SMALL, "--output_file", str(tmp_path / "t.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0 and not (tmp_path / "t.json").exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "started one process, not the 2 asked for" in errors[0]
    assert "accelerate launch --multi_gpu --num_processes N" in errors[0] and "torchrun --nproc_per_node N" in errors[0]


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))  # each process's rows are ~460 kB


def test_a_memmap_folder_that_runs_out_of_space_under_two_processes_is_one_line(tiny_model_dir, tmp_path):
    out, rows = tmp_path / "out", tmp_path / "rows"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([*LAUNCH, str(tiny_model_dir), *SMALL, "--output_file", str(out / "t.json"),
                           "--memmap_folder", str(rows)], capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=_limit_file_size)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ran out of space reserving" in errors[0], done.stderr[-2000:]
    assert not os.listdir(out) and not os.listdir(rows)  # no template, no temporary file


def test_a_model_that_does_not_fit_under_two_processes_is_one_line_before_loading(tiny_model_dir, tmp_path):
    big = shutil.copytree(tiny_model_dir, tmp_path / "big")
    with open(big / "padding.safetensors", "wb") as handle:  # sparse: 2 TB of weights on paper, none on disk
        handle.truncate(2 * 10**12)
    out = tmp_path / "out"
    out.mkdir()
    done = launched(str(big), *SMALL, "--output_file", str(out / "t.json"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "weights (2000.00 GB) do not fit" in errors[0], done.stderr[-2000:]
    assert not os.listdir(out)


def _rank(process: psutil.Process):
    try:
        return process.environ().get("RANK")
    except psutil.Error:  # a short-lived helper process, gone already
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGINT], ids=["crash", "stop"])
def test_one_launched_process_ending_ends_all_and_leaves_nothing(tiny_model_dir, tmp_path, ending):
    out, rows = tmp_path / "out", tmp_path / "rows"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    longer = ["builtin:factual", "builtin:code", "--ica_template_samples_per_ds", "80", "--ica_components", "4",
              "--stability_runs", "20"]  # long enough that the signal lands mid-build
    launcher = subprocess.Popen([*LAUNCH, str(tiny_model_dir), *longer, "--output_file", str(out / "t.json"),
                                 "--memmap_folder", str(rows)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in launcher.stderr:  # the processes have shared out the prompts: the build is under way
            if "processes share" in line:
                break
        workers = {_rank(p): p for p in psutil.Process(launcher.pid).children(recursive=True) if _rank(p)}
        assert set(workers) == {"0", "1"}
        workers["1"].send_signal(ending)
        launcher.stderr.close()
        assert launcher.wait(timeout=180) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in workers.values()):
        assert time.monotonic() < deadline, "a launched process outlived the one that ended"
        time.sleep(0.5)
    assert not os.listdir(out) and not os.listdir(rows)
