"""One template build in a fresh process (alone, or as one of a launch's processes), measured from inside.

    python bench/_build_child.py OUT.json SITE SETS SAMPLES MAX_TOKENS [MEMMAP_FOLDER|-]
    accelerate launch --multi_gpu --num_processes 2 bench/_build_child.py ...

Builds on the embedded model from the built-in SETS (comma-separated) and prints one JSON
line per process: its rank, the tokens it captured, the build's seconds per phase, and
its peak resident memory (VmHWM: the model, the rows it held, everything; pages of a
mapped file count while they are resident) and its peak data memory (VmData, sampled:
what a data limit counts, which a mapped file's pages are not). The main
process saves the template to OUT.json. A build that fails with fnweb's error prints
{"error": ...} instead and exits with 2. Only the benchmark uses this script.
"""

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fnweb.build import BuildConfig, build_template  # noqa: E402
from fnweb.errors import FnwebError  # noqa: E402
from fnweb.models import EMBEDDED_ID, ModelRequest, load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402
from fnweb.shards import Shards  # noqa: E402


def status_mb(field: str = "VmHWM") -> float:
    for line in open("/proc/self/status"):
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return status_mb("VmHWM")


class DataPeak:
    """The highest VmData (what a data limit counts; the kernel keeps no peak of it) seen every 20 ms."""

    def __init__(self):
        self.mb = status_mb("VmData")
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            self.mb = max(self.mb, status_mb("VmData"))
            time.sleep(0.02)


def main() -> None:
    out, site, sets, samples, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    folder = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    data = DataPeak()
    shards = Shards.from_environment()
    lm = load_model(ModelRequest(EMBEDDED_ID, device=str(shards.own_device) if shards.distributed else "auto"))
    config = BuildConfig(sources=[PromptSource(f"builtin:{name}") for name in sets.split(",")],
                         samples_per_dataset=samples, max_tokens=max_tokens, k=10, site=site, memmap_folder=folder)
    counted = {}
    start = time.perf_counter()
    try:
        result = build_template(lm, config, output=out, shards=shards,
                                progress=lambda e: counted.update(tokens=e.total) if e.unit == "tokens" else None)
    except FnwebError as exc:
        print(json.dumps({"rank": shards.rank, "error": str(exc), "seconds": time.perf_counter() - start,
                          "peak_mb": peak_mb(), "peak_data_mb": data.mb}), flush=True)
        sys.exit(2)
    print(json.dumps({"rank": shards.rank, "processes": shards.world, "tokens": counted.get("tokens", 0),
                      "all_tokens": result.n_tokens, "seconds": time.perf_counter() - start,
                      "phases": result.seconds, "parts": result.parts, "peak_mb": peak_mb(),
                      "peak_data_mb": data.mb}), flush=True)


if __name__ == "__main__":
    main()
