"""One template build in a fresh process (alone, or as one of a launch's processes), measured from inside.

    python bench/_build_child.py OUT.json SITE SETS SAMPLES MAX_TOKENS [MEMMAP_FOLDER|-]
    accelerate launch --multi_gpu --num_processes 2 bench/_build_child.py ...

Builds on the embedded model from the built-in SETS (comma-separated) and prints one JSON
line per process: its rank, the tokens it captured, the build's seconds per phase, and
its peak resident memory (VmHWM: the model, the rows it held, everything). The main
process saves the template to OUT.json. Only the benchmark uses this script.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fnweb.build import BuildConfig, build_template  # noqa: E402
from fnweb.models import EMBEDDED_ID, ModelRequest, load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402
from fnweb.shards import Shards  # noqa: E402


def peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    out, site, sets, samples, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    folder = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    shards = Shards.from_environment()
    lm = load_model(ModelRequest(EMBEDDED_ID, device=str(shards.own_device) if shards.distributed else "auto"))
    config = BuildConfig(sources=[PromptSource(f"builtin:{name}") for name in sets.split(",")],
                         samples_per_dataset=samples, max_tokens=max_tokens, k=10, site=site, memmap_folder=folder)
    counted = {}
    start = time.perf_counter()
    result = build_template(lm, config, output=out, shards=shards,
                            progress=lambda e: counted.update(tokens=e.total) if e.unit == "tokens" else None)
    print(json.dumps({"rank": shards.rank, "processes": shards.world, "tokens": counted.get("tokens", 0),
                      "all_tokens": result.n_tokens, "seconds": time.perf_counter() - start,
                      "phases": result.seconds, "parts": result.parts, "peak_mb": peak_mb()}), flush=True)


if __name__ == "__main__":
    main()
