"""The benchmark's scale-out sections: one process against two, tokens past memory, and a busy machine.

- ``processes``: the same build (100 built-in prompts on the embedded model) by one process
  and by two launched ones (``accelerate launch --multi_gpu``: torchrun; CPU processes over
  gloo, CUDA hidden), each process with its share of the cores: wall time, every process's
  peak memory, its tokens, and agreement (identical masks, mask IoU, explained variance).
- ``memmap``: builds whose rows go to a mapped file (``--memmap_folder``), at growing token
  counts: seconds per 1,000 tokens (flat when time is linear in tokens) and peak memory
  (flat when memory is bounded per process), next to an in-memory build of the largest.
- ``busy``: the decomposition against the original's method while as many busy processes
  as there are cores compete for them (a "slow day"), to show the lead does not rest on
  an idle machine. CPU only (with CUDA, fnweb's passes run on the GPU).

Only ``bench/run.py`` uses this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SETS_100 = "factual,arithmetic,code,creative,multilingual"
ALL_SETS = "arithmetic,arithmetic_task,code,creative,factual,mcq,multilingual,sentiment,sentiment_task"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--num_processes"]


def build(out: Path, site: str, sets: str, samples: int, max_tokens: int = 128, folder: str = "-",
          processes: int = 1, cpu: bool = False) -> tuple[float, list[dict]]:
    """(wall seconds, one record per process) of a build in fresh processes, each with its share of the cores.

    Several processes, or ``cpu``: with CUDA hidden (launched processes share the CPU, as on a machine without GPUs).
    """
    threads = max(1, (os.cpu_count() or 2) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    command = [sys.executable] if processes == 1 else [*LAUNCH, str(processes)]
    if processes > 1 or cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes: the comparison is of processes, not of devices
    start = time.perf_counter()
    done = subprocess.run([*command, str(HERE / "_build_child.py"), str(out), site, sets, str(samples),
                           str(max_tokens), folder], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"build failed: {done.stderr[-2000:]}")
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return wall, sorted(records, key=lambda r: r["rank"])


def template_agreement(a: Path, b: Path) -> dict:
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    ious, same = [], 0
    for c, layers in first["templates"].items():
        x = {(layer, ch) for layer, chs in layers.items() for ch in chs}
        y = {(layer, ch) for layer, chs in second["templates"][c].items() for ch in chs}
        ious.append(len(x & y) / max(len(x | y), 1))
        same += x == y
    variance = np.abs(np.subtract(first["fnweb"]["ica"]["explained_variance"],
                                  second["fnweb"]["ica"]["explained_variance"]))
    return {"identical_masks": f"{same}/{len(ious)}", "mask_iou": float(np.mean(ious)),
            "explained_variance_max_rel_diff": float(
                (variance / np.abs(first["fnweb"]["ica"]["explained_variance"])).max())}


def bench_processes(site: str, workdir: Path) -> dict:
    one_s, one = build(workdir / "one.json", site, SETS_100, 20, cpu=True)
    two_s, two = build(workdir / "two.json", site, SETS_100, 20, processes=2)
    return {"tokens": one[0]["all_tokens"], "one_process_s": one_s, "two_processes_s": two_s,
            "speedup": one_s / two_s, "one_process_peak_mb": one[0]["peak_mb"],
            "two_processes_peak_mb": [r["peak_mb"] for r in two], "two_processes_tokens": [r["tokens"] for r in two],
            "one_process_phases": one[0]["phases"], "two_processes_phases": two[0]["phases"],
            **template_agreement(workdir / "one.json", workdir / "two.json"),
            "note": f"CPU processes; {os.cpu_count()} cores shared (each process gets its share of threads)"}


def bench_memmap(site: str, workdir: Path, samples=(6, 24, 128)) -> dict:
    folder = workdir / "rows"
    points = []
    for n in samples:
        wall, (record,) = build(workdir / "mapped.json", site, ALL_SETS, n, folder=str(folder))
        points.append({"tokens": record["all_tokens"], "seconds": wall, "build_s": sum(record["phases"].values()),
                       "s_per_1k_tokens": 1000 * sum(record["phases"].values()) / record["all_tokens"],
                       "peak_mb": record["peak_mb"], "phases": record["phases"]})
    _, (in_memory,) = build(workdir / "memory.json", site, ALL_SETS, samples[-1])
    x = np.log([p["tokens"] for p in points])
    return {"points": points, "leftover_files": len(os.listdir(folder)),
            "time_exponent": float(np.polyfit(x, np.log([p["build_s"] for p in points]), 1)[0]),
            "in_memory_peak_mb": in_memory["peak_mb"], "in_memory_build_s": sum(in_memory["phases"].values()),
            "same_masks_as_in_memory": template_agreement(workdir / "mapped.json", workdir / "memory.json")}


def bench_busy(run_child, data: Path, workdir: Path, k: int = 10, busy: int = 0) -> dict:
    """fnweb and the original's decomposition while ``busy`` loops (default: one per core) compete for the cores."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(busy or os.cpu_count() or 2)]
    try:
        time.sleep(1.0)
        ours = run_child("fnweb", data, k, workdir / "busy_ours.npy")
        theirs = run_child("reference", data, k, workdir / "busy_theirs.npy")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"busy_processes": len(spinners), "fnweb_s": ours["seconds"], "reference_s": theirs["seconds"],
            "speedup": theirs["seconds"] / ours["seconds"], "fnweb_parts": ours.get("parts", {}),
            "target": ">= 20", "ok": theirs["seconds"] / ours["seconds"] >= 20}


def lines(results: dict) -> list[str]:
    """The sections' rows of the printed table."""
    out = []
    p = results.get("processes")
    if p:
        out.append(f"processes      1 vs 2 ({p['tokens']:,} tokens): {p['one_process_s']:.1f} s vs "
                   f"{p['two_processes_s']:.1f} s ({p['speedup']:.2f}x); peak {p['one_process_peak_mb']:.0f} MB vs "
                   + " + ".join(f"{m:.0f}" for m in p["two_processes_peak_mb"]) + " MB; tokens "
                   + " + ".join(f"{t:,}" for t in p["two_processes_tokens"])
                   + f"; masks identical {p['identical_masks']}, IoU {p['mask_iou']:.3f}")
    m = results.get("memmap")
    if m:
        pts = ", ".join(f"{q['tokens']:,}: {q['build_s']:.1f} s ({q['s_per_1k_tokens']:.2f} s/1k) / "
                        f"{q['peak_mb']:.0f} MB" for q in m["points"])
        out.append(f"memmap         {pts}; time ~ tokens^{m['time_exponent']:.2f}; in memory "
                   f"{m['in_memory_peak_mb']:.0f} MB; files left {m['leftover_files']}; masks identical "
                   f"{m['same_masks_as_in_memory']['identical_masks']}")
    b = results.get("busy")
    if b:
        out.append(f"busy machine   decomposition {b['fnweb_s']:.2f} s vs original {b['reference_s']:.1f} s  "
                   f"speedup {b['speedup']:.1f}x with {b['busy_processes']} busy processes  (target {b['target']})  "
                   f"{'OK' if b['ok'] else 'MISSED'}")
    return out

