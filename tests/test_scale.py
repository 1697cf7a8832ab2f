"""Scaling out: sharing prompts among processes, rows in a mapped file, staged capture, split
models, memory estimates."""

import copy
import json
import os
import resource
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tiny
import torch

from fnweb.build import BuildConfig, _gathered_order, build_template
from fnweb.capture import capture, input_device
from fnweb.decompose import decompose
from fnweb.errors import FnwebError, Stopped
from fnweb.fit import _data_bytes, build_estimate, check_model_fits
from fnweb.masks import apply_masks
from fnweb.models import LoadedModel, ModelRequest
from fnweb.progress import StopFlag
from fnweb.prompts import PromptSource
from fnweb.rowstore import check_folder, row_store
from fnweb.shards import Shards
from fnweb.sketch import power_dtype
from fnweb.templates import Template

pytestmark = pytest.mark.usefixtures("one_thread")
SEQUENCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [15, 16, 17, 18, 19, 20, 21], [22], [23, 24, 25, 26]] * 4


def small_config(**changes) -> BuildConfig:
    settings = dict(sources=[PromptSource("builtin:factual"), PromptSource("builtin:code")], samples_per_dataset=20,
                    k=4, max_tokens=64, stability_runs=0, card_contexts=5)
    return BuildConfig(**{**settings, **changes})


def test_the_plan_deals_longest_first_so_tokens_balance():
    lengths = [len(s) for s in SEQUENCES]
    plan = Shards(world=3, rank=0).plan(lengths)
    assert sorted(i for part in plan for i in part) == list(range(len(lengths)))
    tokens = [sum(lengths[i] for i in part) for part in plan]
    assert max(tokens) - min(tokens) <= max(lengths)


def test_more_processes_than_prompts_is_refused():
    with pytest.raises(FnwebError, match="3 processes need at least one prompt each, but there are only 2"):
        Shards(world=3).plan([4, 5])


def test_shards_captured_apart_line_up_with_one_capture(tiny_lm):
    whole = capture(tiny_lm.model, SEQUENCES, batch_size=3, storage="float32").matrix
    plan = Shards(world=2).plan([len(s) for s in SEQUENCES])
    parts = [capture(tiny_lm.model, [SEQUENCES[i] for i in part], batch_size=3, storage="float32").matrix
             for part in plan]
    gathered = torch.cat(parts)  # what the main process receives, in rank order
    ordered = torch.empty_like(gathered)
    ordered[torch.from_numpy(_gathered_order([len(s) for s in SEQUENCES], plan))] = gathered
    assert torch.allclose(ordered, whole, atol=1e-6)


def test_mapped_rows_give_the_same_maps_and_leave_no_file(tiny_lm, tmp_path):
    in_memory = capture(tiny_lm.model, SEQUENCES, storage="float16")
    seen = []
    with row_store(in_memory.n_tokens, in_memory.matrix.shape[1], torch.float16, tmp_path) as store:
        assert store.mapped
        mapped = capture(tiny_lm.model, SEQUENCES, storage="float16", store=store,
                         progress=lambda _: seen.append(os.listdir(tmp_path)))
        assert torch.equal(mapped.matrix, in_memory.matrix)
        a = decompose(in_memory.matrix, k=3, mean=in_memory.mean, std=in_memory.std)
        b = decompose(mapped.matrix, k=3, mean=mapped.mean, std=mapped.std, release=store.release)
    assert np.array_equal(a.maps, b.maps) and np.array_equal(a.sources, b.sources)
    assert seen and not any(seen) and not os.listdir(tmp_path)  # the file has no name while the build runs


def test_a_mapped_build_equals_an_in_memory_one_and_a_stop_leaves_nothing(tiny_lm, tmp_path):
    plain = build_template(tiny_lm, small_config())
    mapped = build_template(tiny_lm, small_config(memmap_folder=str(tmp_path / "rows")))
    assert mapped.template.components == plain.template.components
    assert "in a mapped file" in mapped.fit and not os.listdir(tmp_path / "rows")
    stop = StopFlag()

    def stop_mid_capture(event):
        if event.phase == "capturing" and event.done > 0:
            stop.set()

    with pytest.raises(Stopped):
        build_template(tiny_lm, small_config(memmap_folder=str(tmp_path / "rows")), tmp_path / "t.json",
                       progress=stop_mid_capture, stop=stop)
    assert not os.listdir(tmp_path / "rows") and not (tmp_path / "t.json").exists()


def _wide_lm() -> LoadedModel:
    """The tiny Llama with a wide MLP (3 x 32,768 neurons: 192 kB a token), so that 2,400 tokens fill 460 MB."""
    from transformers import AutoModelForCausalLM

    config = tiny.make_model("llama").config
    config.intermediate_size = 32_768
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    return LoadedModel(model, tiny.make_tokenizer(), ModelRequest(model_id="tiny-wide"))


def _wide_config(**changes) -> BuildConfig:
    return small_config(samples_per_dataset=20, card_contexts=0, **changes)  # about 2,400 tokens


def _limited(room: int) -> None:
    """Limit this process's data memory (RLIMIT_DATA) to ``room`` bytes more than it holds now."""
    resource.setrlimit(resource.RLIMIT_DATA, (_data_bytes() + room, resource.getrlimit(resource.RLIMIT_DATA)[1]))


def _capped_builds(_rank: int, out: str, room: int, mapped: bool) -> None:
    """In a fresh process: the tiny wide model, then under a data limit either the build through a mapped file,
    or (``mapped`` False) a build in memory without a limit first, then two builds in memory under it."""
    torch.set_num_threads(1)
    lm, said = _wide_lm(), {}
    if mapped:
        _limited(room)
        config = _wide_config(memmap_folder=os.path.join(out, "rows"))
        built = build_template(lm, config, os.path.join(out, "mapped.json"))
        said["tokens"] = built.n_tokens
    else:
        build_template(lm, _wide_config(), os.path.join(out, "unlimited.json"))
        _limited(room)
        try:  # in memory: the estimate refuses it before the capture
            build_template(lm, _wide_config(), os.path.join(out, "refused.json"))
        except FnwebError as exc:
            said["refused"] = str(exc)
        with mock.patch("fnweb.fit.free_host_bytes", lambda: 10**15):  # an estimate that missed: the allocation fails
            try:
                build_template(lm, _wide_config(), os.path.join(out, "ran-out.json"))
            except FnwebError as exc:
                said["ran_out"] = str(exc)
    with open(os.path.join(out, f"said-{mapped}.json"), "w") as handle:
        json.dump(said, handle)


def test_under_a_data_limit_rows_in_memory_fail_in_one_line_and_a_mapped_build_completes(tmp_path):
    import torch.multiprocessing as mp

    room = 400 * 2**20  # the limit counts what the process allocates, not the pages of a shared file mapping
    for mapped in (False, True):  # each in a fresh process, under the same limit above the loaded model
        mp.spawn(_capped_builds, args=(str(tmp_path), room, mapped), nprocs=1, join=True)
    said = {**json.loads((tmp_path / "said-False.json").read_text()),
            **json.loads((tmp_path / "said-True.json").read_text())}
    rows = said["tokens"] * 3 * 32_768 * 2
    assert rows > room  # the rows alone are more than the limit leaves
    for message in (said["refused"], said["ran_out"]):
        assert "--memmap_folder DIR" in message and "\n" not in message
    assert said["refused"].startswith("This build would not fit in memory.")
    assert said["ran_out"].startswith("This build ran out of memory (this process's data limit leaves")
    assert sorted(os.listdir(tmp_path)) == ["mapped.json", "rows", "said-False.json", "said-True.json",
                                            "unlimited.json"]
    assert not os.listdir(tmp_path / "rows")
    assert Template.load(tmp_path / "mapped.json").components == Template.load(tmp_path / "unlimited.json").components


def test_a_memmap_folder_that_cannot_be_made_or_has_no_room_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(FnwebError, match="cannot be made"):
        check_folder(blocker / "rows")
    room = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(FnwebError, match=r"GB free; this process's rows need .* Free space there"):
        with row_store(room // 2 // 1000 + 1, 1000, torch.float16, tmp_path / "rows"):
            pass
    assert not os.listdir(tmp_path / "rows")


def test_the_cli_refuses_a_bad_memmap_folder_in_one_line(tiny_model_dir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "t.json"
    done = subprocess.run([sys.executable, "-m", "fnweb.cli.buildtemplates", str(tiny_model_dir), "builtin:factual",
                           "--ica_template_samples_per_ds", "10", "--ica_components", "3", "--output_file", str(out),
                           "--memmap_folder", str(tmp_path / "a-file" / "rows"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: The memory-map folder") and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_staged_capture_lands_the_same_rows_as_direct_writes(tiny_lm):
    direct = capture(tiny_lm.model, SEQUENCES, batch_size=3, storage="float16")
    staged = capture(tiny_lm.model, SEQUENCES, batch_size=3, storage="float16", staged=True)
    assert torch.equal(direct.matrix, staged.matrix)
    assert torch.equal(direct.mean, staged.mean) and torch.equal(direct.std, staged.std)


def test_staged_capture_keeps_massive_activations_finite(tiny_lm):
    model = copy.deepcopy(tiny_lm.model)
    model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda _m, args: (args[0] * 1e9,))
    staged = capture(model, SEQUENCES[:3], storage="float16", staged=True)
    assert torch.isfinite(staged.matrix).all() and staged.matrix.abs().max() == 65504


def test_capture_and_masks_work_on_a_model_split_over_devices(tiny_lm, tmp_path):
    from accelerate import dispatch_model

    # Without GPUs the split is CPU and disk: the disk layers' weights sit on "meta" and move in to run,
    # as a model spread by device_map="auto" over more layers than fit does.
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    split = dispatch_model(copy.deepcopy(tiny_lm.model), device_map=device_map, main_device="cpu",
                           offload_dir=str(tmp_path))
    assert next(split.model.layers[1].parameters()).device.type == "meta" and input_device(split).type == "cpu"
    whole = capture(tiny_lm.model, SEQUENCES[:6], storage="float32")
    assert torch.allclose(capture(split, SEQUENCES[:6], storage="float32").matrix, whole.matrix, atol=1e-6)
    keep = torch.ones(tiny.INTERMEDIATE)
    keep[:16] = 0
    ids = torch.tensor([SEQUENCES[3]])
    with torch.no_grad():
        with apply_masks(tiny_lm.model, {1: keep}, "neurons"):
            expected = tiny_lm.model(ids).logits
        with apply_masks(split, {1: keep}, "neurons"):
            masked = split(ids).logits
        unmasked = split(ids).logits
    assert torch.allclose(masked, expected, atol=1e-5) and not torch.allclose(masked, unmasked, atol=1e-3)


def test_the_decomposition_says_where_its_time_went(tiny_lm):
    acts = capture(tiny_lm.model, SEQUENCES, storage="float16")
    parts = decompose(acts.matrix, k=3, mean=acts.mean, std=acts.std).info["seconds"]
    assert {"read and standardise", "power iterations", "final pass", "ica", "sources"} <= set(parts)
    assert power_dtype(torch.device("cpu")) in (torch.bfloat16, torch.float32)


def test_the_power_iterations_precision_follows_the_hardware_not_the_clock(monkeypatch):
    from fnweb import sketch

    monkeypatch.setattr(sketch, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert power_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(sketch, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(sketch.time, "perf_counter", lambda: 0.0)  # a clock that says nothing changes nothing
    assert power_dtype(torch.device("cpu")) == torch.float32
    assert power_dtype(torch.device("meta")) == torch.float32


def test_the_estimate_says_what_fits_and_what_to_change():
    fits = build_estimate(500_000_000, True, 7_000, 7_000, 46_080, 2, 10, free=20 * 10**9)
    assert fits.fits and "activations 0.65 GB in memory (7,000 tokens x 46,080 channels)" in fits.line()
    big = build_estimate(500_000_000, True, 400_000, 400_000, 46_080, 2, 10, free=20 * 10**9)
    with pytest.raises(FnwebError, match="would not fit.*fewer tokens.*more processes.*memory-map folder.*mlp_output"):
        big.check()
    mapped = build_estimate(500_000_000, True, 400_000, 400_000, 46_080, 2, 10, mapped=True, free=20 * 10**9)
    assert mapped.fits and "in a mapped file" in mapped.line()
    two_here = build_estimate(500_000_000, True, 150_000, 300_000, 46_080, 2, 10, processes=2, local=2,
                              free=20 * 10**9)
    assert not two_here.fits  # processes on one machine share its memory


def test_a_model_that_does_not_fit_is_refused_before_loading():
    with pytest.raises(FnwebError, match=r"weights \(10.00 GB\) do not fit: 4.00 GB free"):
        check_model_fits(10 * 10**9, "cpu", free=4 * 10**9)
    with pytest.raises(FnwebError, match="do not fit even spread over every GPU"):
        check_model_fits(10 * 10**9, "multi", free=4 * 10**9)
    check_model_fits(1 * 10**9, "cpu", free=4 * 10**9)


def test_templates_record_how_many_processes_built_them(tiny_lm, tmp_path):
    result = build_template(tiny_lm, small_config(card_contexts=0), tmp_path / "t.json")
    assert Template.load(tmp_path / "t.json").meta.processes == 1
    data = json.loads((tmp_path / "t.json").read_text())
    del data["fnweb"]["processes"]  # an older file
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert Template.load(tmp_path / "old.json").meta.processes == 1 and result.parts


LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fnweb.cli.buildtemplates"]


def launched(*args, timeout=300):
    # --multi_gpu is accelerate's torchrun launcher; without GPUs its processes talk over gloo. (Its --cpu
    # starts one process unless MPI is set up.) OMP_NUM_THREADS=1: the two share this machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_two_launched_processes_build_the_template_one_process_builds(tiny_model_dir, tmp_path):
    common = [str(tiny_model_dir), "builtin:factual", "builtin:code", "--ica_template_samples_per_ds", "20",
              "--ica_components", "4", "--max_seq_length", "64", "--stability_runs", "2", "--seed", "3"]
    done = launched(*common, "--output_file", str(tmp_path / "two.json"), "--memmap_folder", str(tmp_path / "rows"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Templates saved to") == 1  # only the main process reports and writes
    shares = [line for line in done.stderr.splitlines() if "2 processes share 40 prompts" in line]
    assert len(shares) == 1 and "process 0" in shares[0] and "process 1" in shares[0]
    assert "Captured tokens per process:" in done.stderr and not os.listdir(tmp_path / "rows")
    one = subprocess.run([sys.executable, "-m", "fnweb.cli.buildtemplates", *common, "--output_file",
                          str(tmp_path / "one.json"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    a, b = Template.load(tmp_path / "one.json"), Template.load(tmp_path / "two.json")
    assert b.meta.processes == 2 and a.meta.processes == 1 and a.meta.n_tokens == b.meta.n_tokens
    assert a.components == b.components  # identical masks
    assert a.meta.ica["stability"] == b.meta.ica["stability"]  # same rows, same order: same resamples
    assert np.allclose(a.meta.ica["explained_variance"], b.meta.ica["explained_variance"], rtol=1e-3)
    first, second = a.cards["components"], b.cards["components"]
    assert [c["label"] for c in first] == [c["label"] for c in second]
    assert all(abs(x["readout"]["fidelity"] - y["readout"]["fidelity"]) < 1e-3 for x, y in zip(first, second))


def test_a_launch_that_leaves_a_process_without_prompts_says_so_once(tiny_model_dir, tmp_path):
    done = launched(str(tiny_model_dir), "builtin:factual", "--ica_template_samples_per_ds", "1",
                    "--ica_components", "1", "--output_file", str(tmp_path / "t.json"))
    assert done.returncode != 0  # the launcher's own code; each process exited with 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: 2 processes need at least one prompt each, but there are only 1 prompts: "
                      "use at most 1 processes, or more samples per dataset."]
    assert not (tmp_path / "t.json").exists()


def _decompose_half(rank: int, world: int, init: str, out: str) -> None:
    """One of two processes: its half of the planted rows, the shared decomposition; the main one saves the maps."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        matrix, _ = tiny.planted(tokens=2000, channels=300, k=4, seed=2)
        rows = matrix[rank::world]  # interleaved shares, as a real plan deals them
        shards = Shards(world, rank)
        mean, std = shards.pooled(rows.shape[0], rows.float().mean(0), rows.float().std(0, unbiased=False))
        order = np.concatenate([np.arange(r, 2000, world) for r in range(world)])
        result = decompose(rows, k=4, seed=1, mean=mean, std=std, shards=shards, row_order=order)
        if rank == 0:
            np.savez(out, maps=result.maps, sources=result.sources)
        else:
            assert result.sources is None and result.maps.shape == (300, 4)
    finally:
        dist.destroy_process_group()


def test_the_decomposition_over_two_processes_finds_the_maps_of_one(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "two.npz")
    mp.spawn(_decompose_half, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    two = np.load(out)
    matrix, _ = tiny.planted(tokens=2000, channels=300, k=4, seed=2)
    one = decompose(matrix, k=4, seed=1)
    corr = np.abs(np.corrcoef(one.maps.T, two["maps"].T)[:4, 4:])
    assert np.all(np.diag(corr) >= 0.999)  # same order, same signs: the ICA saw the same scores
    assert np.allclose(one.sources, two["sources"], atol=1e-3)


def test_the_finetuning_estimate_counts_optimizer_state_and_grows_with_the_batch(tiny_lm):
    from fnweb.fit import finetune_estimate, finetune_line

    four, eight = finetune_estimate(tiny_lm.model, 1000, 4, 64), finetune_estimate(tiny_lm.model, 1000, 8, 64)
    assert four["trainable"] == 16_000 and four["weights"] > 0 and eight["activations"] == 2 * four["activations"]
    assert "at batch size 4 x 64 tokens" in finetune_line(tiny_lm.model, 1000, 4, 64)
