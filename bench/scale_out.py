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
- ``capped``: tokens past what fits in memory, under a real limit. Every build runs in a
  process whose data memory is capped (``RLIMIT_DATA``, as ``prlimit --data``: heap and
  anonymous mappings, what torch allocates; a shared file mapping is not counted). In
  memory, builds of growing size run until one fails (fnweb's one-line error: the
  allocation ran out, or the estimate refused it); then one build through a mapped file
  holds at least 4x the tokens of the one that failed, under the same cap. Heavy (a few
  minutes a build): run it alone, ``python bench/scale_out.py --data_cap_mb 1536``.

``bench/run.py`` runs the first three; the fourth runs from this file's command line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
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
          processes: int = 1, cpu: bool = False, data_cap: int = 0) -> tuple[float, list[dict]]:
    """(wall seconds, one record per process) of a build in fresh processes, each with its share of the cores.

    Several processes, or ``cpu``: with CUDA hidden (launched processes share the CPU, as on a machine without GPUs).
    ``data_cap``: each process's data memory limit in bytes (0: none); a build that fails with fnweb's
    error under it gives records with "error".
    """
    threads = max(1, (os.cpu_count() or 2) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    command = [sys.executable] if processes == 1 else [*LAUNCH, str(processes)]
    if processes > 1 or cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes: the comparison is of processes, not of devices
    start = time.perf_counter()
    done = subprocess.run([*command, str(HERE / "_build_child.py"), str(out), site, sets, str(samples),
                           str(max_tokens), folder], capture_output=True, text=True, env=env, cwd=ROOT,
                          preexec_fn=(lambda: _cap_data(data_cap)) if data_cap else None)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 and not (data_cap and records and all("error" in r for r in records)):
        raise RuntimeError(f"build failed: {done.stderr[-2000:]}")
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


def _cap_data(limit: int) -> None:
    """In the child, before it runs: its data memory limit (``prlimit --data``)."""
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


def bench_capped(site: str, workdir: Path, cap_mb: int, samples=(1, 2, 3, 4, 6, 9, 13, 19, 28)) -> dict:
    """In-memory builds of growing size under a data cap until one fails; then 4x its tokens through a mapped file."""
    cap = cap_mb * 2**20
    tried = []
    for n in samples:
        wall, (record,) = build(workdir / "capped.json", site, ALL_SETS, n, data_cap=cap)
        tried.append(_capped_point(n, wall, record))
        if "error" in record:
            break
    else:
        raise RuntimeError(f"every in-memory build fit under {cap_mb} MB: raise the samples or lower the cap")
    failed, fitted = tried[-1], [t for t in tried if "error" not in t]
    per_sample = failed["tokens"] / failed["samples"]
    mapped_samples = math.ceil(4.2 * failed["tokens"] / per_sample)
    wall, (record,) = build(workdir / "capped_mapped.json", site, ALL_SETS, mapped_samples,
                            folder=str(workdir / "capped_rows"), data_cap=cap)
    mapped = _capped_point(mapped_samples, wall, record)
    if "error" in mapped:
        raise RuntimeError(f"the mapped build failed under {cap_mb} MB: {mapped['error']}")
    largest = fitted[-1]["tokens"] if fitted else 0
    return {"cap_mb": cap_mb, "in_memory": tried, "largest_in_memory_tokens": largest,
            "failed_in_memory_tokens": failed["tokens"], "mapped": mapped,
            "ratio_to_failed": mapped["tokens"] / failed["tokens"],
            "ratio_to_largest": mapped["tokens"] / largest if largest else None,
            "leftover_files": len(os.listdir(workdir / "capped_rows")),
            "ok": mapped["tokens"] >= 4 * failed["tokens"]}


def _capped_point(samples: int, wall: float, record: dict) -> dict:
    point = {"samples": samples, "seconds": wall, "peak_mb": record["peak_mb"], "peak_data_mb": record["peak_data_mb"]}
    if "error" in record:
        said = re.search(r"\(([\d,]+) tokens x", record["error"])
        return {**point, "tokens": int(said.group(1).replace(",", "")), "error": record["error"]}
    build_s = sum(record["phases"].values())
    return {**point, "tokens": record["all_tokens"], "build_s": build_s, "phases": record["phases"],
            "s_per_1k_tokens": 1000 * build_s / record["all_tokens"]}


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
    c = results.get("capped")
    if c:
        q, f = c["mapped"], c["in_memory"][-1]
        out.append(f"capped         data limit {c['cap_mb']:,} MB: in memory {c['largest_in_memory_tokens']:,} tokens "
                   f"built, {f['tokens']:,} failed ({'ran out' if 'ran out of memory' in f['error'] else 'refused'})"
                   f"; mapped {q['tokens']:,} tokens ({c['ratio_to_failed']:.1f}x the failed) in {q['build_s']:.0f} s "
                   f"({q['s_per_1k_tokens']:.1f} s/1k), peak {q['peak_mb']:.0f} MB resident, "
                   f"{q['peak_data_mb']:.0f} MB data; files left {c['leftover_files']}  (target >= 4x)  "
                   f"{'OK' if c['ok'] else 'MISSED'}")
    b = results.get("busy")
    if b:
        out.append(f"busy machine   decomposition {b['fnweb_s']:.2f} s vs original {b['reference_s']:.1f} s  "
                   f"speedup {b['speedup']:.1f}x with {b['busy_processes']} busy processes  (target {b['target']})  "
                   f"{'OK' if b['ok'] else 'MISSED'}")
    return out



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The capped section alone: tokens past a data memory limit.")
    parser.add_argument("--data_cap_mb", type=int, default=1536, help="each build process's data limit (MB)")
    parser.add_argument("--site", default="neurons")
    parser.add_argument("--out", default=str(HERE / "results" / "capped.json"))
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        results = {"capped": bench_capped(args.site, Path(tmp), args.data_cap_mb)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines(results)))
    for point in results["capped"]["in_memory"]:
        print(f"  in memory {point['tokens']:,} tokens: "
              + (point["error"] if "error" in point else f"built in {point['build_s']:.0f} s")
              + f"; peak {point['peak_mb']:.0f} MB resident, {point['peak_data_mb']:.0f} MB data")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
