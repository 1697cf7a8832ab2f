"""One decomposition in a fresh process, so that its peak memory can be read alone.

    python bench/_child.py {fnweb|reference} DATA.npz K OUT.npy

Prints one JSON line: seconds and peak resident memory above the process's size
before the activations were loaded (so each method's own copy of the data counts:
float16 for fnweb, float32 for the original). For fnweb it adds the decomposition's
seconds per part and, timed apart (not in ``seconds``), its stability re-runs (5). With
CUDA present, fnweb's PCA passes run on the GPU, and its peak GPU memory is printed too;
the original's method is CPU-only.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import sklearn.decomposition  # noqa: E402,F401  (imported before the baseline is read)
import torch  # noqa: E402


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB.

    VmHWM belongs to the address space made at exec, unlike ru_maxrss, which keeps
    the peak of the parent it was forked from.
    """
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    method, data_path, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    from reference import reference_decompose

    from fnweb.decompose import decompose

    before = status_mb("VmRSS")
    data = np.load(data_path)
    if method == "fnweb":
        matrix = torch.from_numpy(data["matrix"])  # float16, as captured
        mean, std = torch.from_numpy(data["mean"]), torch.from_numpy(data["std"])
        device = "cuda" if torch.cuda.is_available() else "cpu"  # the PCA passes run where a build's would
        start = time.perf_counter()
        result = decompose(matrix, k=k, seed=0, mean=mean, std=std, device=device)
        seconds = time.perf_counter() - start
        maps, extra = result.maps, {"parts": result.info["seconds"]}
        from fnweb.stability import component_stability

        clock = time.perf_counter()
        component_stability(result, runs=5)
        extra["stability_s"] = time.perf_counter() - clock
    else:
        x = data["matrix"].astype(np.float32)  # the original holds X in float32
        start = time.perf_counter()
        maps = reference_decompose(x, k=k, seed=0)
        seconds, extra = time.perf_counter() - start, {}
    peak = status_mb("VmHWM")
    np.save(out, maps)
    result = {"seconds": seconds, "peak_mb": peak - before, **extra}
    if method == "fnweb" and torch.cuda.is_available():
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
