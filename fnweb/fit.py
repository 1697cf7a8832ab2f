"""Will it fit? The memory a build or a fine-tuning run needs, against what is free, said before the work starts.

A build holds, in each process: the model's weights (on its device; a model spread over
several GPUs holds a share on each); the activation matrix of the process's rows
(tokens x channels x 2 bytes in float16), in memory or, with a memory-map folder, in a
file (disk, not memory: ``fnweb.rowstore``); and the decomposition's working memory:
one row block in float32 and bfloat16, the (channels x w) directions and their sums,
the process's (rows x w) scores, and on the main process every token's scores with
FastICA's float64 copies, the sources and the cards' signals. Processes launched on one
machine share its memory. ``BuildEstimate.line`` says it all in one line;
``BuildEstimate.check`` refuses, saying what to change (fewer tokens, more processes,
the memory-map folder, the smaller ``mlp_output`` site), when it cannot fit.
``check_model_fits`` refuses a model whose weights exceed the free memory of the
devices it would load on, before loading it. The free memory is the machine's, within a
container's limit and within the process's own data limit (``RLIMIT_DATA``: ``ulimit -d``,
``prlimit --data``, which counts the memory a process allocates but not the file a
memory-map folder maps). An allocation that fails anyway (the estimate is an estimate;
other work takes memory meanwhile) is said as one ``FnwebError`` with the same advice
(``said_out_of_memory``), not a traceback.

Fine-tuning (``finetune_estimate``): the weights, the LoRA parameters with their
gradients and AdamW's two moments (16 bytes each in float32), and the activations kept
for the backward pass at the batch size, by the usual transformer estimate (Korthikanti
et al. 2022: s b h (34 + 5 a s / h) bytes per layer in 16-bit). These are estimates
(about 10-20 % high for a build); the free memory is measured.

It knows nothing about how the work is done.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .archs import SITES
from .errors import FnwebError

GB = 1e9
_BLOCKS = 110 * 2**20  # the decomposition's row block in float32 and bfloat16, and the standardising scratch
_SLACK = 0.9  # share of the free memory a build may plan to use
_ALLOCATION_FAILED = ("can't allocate memory", "out of memory")  # torch's CPU and CUDA allocators' words


def free_host_bytes() -> int:
    """Memory available to new work on this machine, within a container's limit when there is one."""
    import psutil

    free = psutil.virtual_memory().available
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, used = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:
            free = min(free, max(0, int(limit) - int(used)))
    room = data_room()
    return int(free if room is None else min(free, room))


def data_room() -> Optional[int]:
    """Bytes this process may still allocate under its data limit (RLIMIT_DATA); None when it has none."""
    try:
        import resource
    except ImportError:  # Windows has no such limit
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - _data_bytes())


def _data_bytes() -> int:
    """The process's data memory now (VmData: what RLIMIT_DATA counts); 0 where /proc cannot say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_device_bytes(device: torch.device) -> Optional[int]:
    """Free memory of a CUDA device (None where it cannot be asked)."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError):
        return None


@dataclass
class BuildEstimate:
    """A build's memory per process, in bytes."""

    model: int  # weights
    rows: int  # the process's activation matrix
    working: int  # the decomposition's working memory (the main process's, the largest)
    free: int  # host memory free now (weights already loaded)
    tokens: int  # the most tokens one process holds
    channels: int
    total_tokens: int = 0  # over every process
    processes: int = 1  # in the whole build
    local: int = 1  # on this machine (they share its memory)
    mapped: bool = False  # rows in a mapped file, not in memory
    site: str = "neurons"
    model_on_host: bool = True

    @property
    def needed(self) -> int:
        """Host memory the build still needs, per process (the weights are loaded already)."""
        return (0 if self.mapped else self.rows) + self.working

    @property
    def fits(self) -> bool:
        return self.needed * self.local <= _SLACK * self.free

    def line(self) -> str:
        where = "in a mapped file" if self.mapped else "in memory"
        each = f"per process ({self.processes} processes, {self.local} here)" if self.processes > 1 else "in all"
        return (f"Memory {each}: model {self.model / GB:.2f} GB{'' if self.model_on_host else ' (on its device)'} + "
                f"activations {self.rows / GB:.2f} GB {where} ({self.tokens:,} tokens x {self.channels:,} channels) + "
                f"decomposition {self.working / GB:.2f} GB; {self.free / GB:.1f} GB free"
                + ("." if self.fits else " — does not fit."))

    def check(self) -> None:
        if self.fits:
            return
        raise FnwebError(f"This build would not fit in memory. {self.line()} Use {self._ways()}.")

    def ran_out(self) -> FnwebError:
        """The error for an allocation that failed although the estimate said the build fits."""
        room = data_room()
        limit = f" (this process's data limit leaves {room / GB:.2f} GB)" if room is not None else ""
        return FnwebError(f"This build ran out of memory{limit}; nothing was written. {self.line()} "
                          f"Use {self._ways()}.")

    def _ways(self) -> str:
        """What to change, joined (the memory-map folder when the rows are in memory)."""
        room = max(0.0, _SLACK * self.free / self.local - self.working)
        per_token = self.rows / max(self.tokens, 1)
        ways = [f"fewer tokens (about {int(room / per_token):,} per process fit: fewer samples or max tokens)",
                "more processes (accelerate launch --num_processes N, on machines of their own)"]
        if not self.mapped:
            ways.append("a memory-map folder (--memmap_folder DIR: the activations go to disk)")
        narrower = SITES[self.site].narrower if self.site in SITES else None
        if narrower:
            ways.append(f"the site {narrower} ({SITES[narrower].help})")
        return ", or ".join(ways)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a failed allocation (Python's, or torch's on the CPU or a GPU)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(words in str(error).lower() for words in _ALLOCATION_FAILED)


@contextmanager
def said_out_of_memory(estimate: BuildEstimate):
    """A failed allocation inside the block becomes ``estimate.ran_out()``: one line saying what to change."""
    try:
        yield
    except Exception as error:
        if not out_of_memory(error):
            raise
        raise estimate.ran_out() from error


def build_estimate(model_bytes: int, model_on_host: bool, tokens: int, total_tokens: int, channels: int,
                   storage_bytes: int, k: int, processes: int = 1, local: int = 1, mapped: bool = False,
                   site: str = "neurons", free: Optional[int] = None, oversample: int = 30) -> BuildEstimate:
    """The estimate for ``tokens`` rows in the largest process's share of ``total_tokens``."""
    width = k + oversample
    working = (_BLOCKS + channels * width * 20 + tokens * width * 20  # directions, sums; this process's scores
               + total_tokens * (width * 16 + k * 64))  # main: gathered scores, FastICA, sources, card signals
    return BuildEstimate(model=model_bytes, rows=tokens * channels * storage_bytes, working=working,
                         free=free_host_bytes() if free is None else free, tokens=tokens, channels=channels,
                         total_tokens=total_tokens,
                         processes=processes, local=local, mapped=mapped, site=site, model_on_host=model_on_host)


def check_model_fits(weights: Optional[int], device: str, processes_here: int = 1,
                     free: Optional[int] = None) -> None:
    """Refuse before loading a model whose weights cannot fit where it would go (spread over every GPU for 'multi')."""
    if not weights:
        return
    if free is None:
        free = _free_for(device, processes_here)
    if free is not None and weights > _SLACK * free:
        spread = " even spread over every GPU" if device == "multi" else ""
        raise FnwebError(f"The model's weights ({weights / GB:.2f} GB) do not fit{spread}: {free / GB:.2f} GB free "
                         f"for it on '{device}'. Load it in 4-bit or 8-bit, use a smaller model, a device with more "
                         "memory, or fewer processes per machine.")


def _free_for(device: str, processes_here: int) -> Optional[int]:
    if device == "multi":
        if not torch.cuda.is_available():
            return None
        return sum(free_device_bytes(torch.device("cuda", i)) or 0 for i in range(torch.cuda.device_count()))
    kind = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        ("cpu" if device == "auto" else device))
    if kind.type == "cuda":
        return free_device_bytes(kind)
    if kind.type == "cpu":
        return free_host_bytes() // max(processes_here, 1)
    return None


def finetune_estimate(model: torch.nn.Module, trainable: int, batch_size: int, seq_len: int) -> dict:
    """Bytes of a fine-tuning run: weights; trainable parameters with gradients and AdamW moments; activations."""
    from .archs import layout_of, unwrap
    from .models import weights_bytes

    layout = layout_of(model)
    heads = int(getattr(getattr(unwrap(model), "config", None), "num_attention_heads", 1) or 1)
    dtype_bytes = next(model.parameters()).element_size()
    per_layer = seq_len * batch_size * layout.hidden_size * (34 + 5 * heads * seq_len / max(layout.hidden_size, 1))
    return {"weights": weights_bytes(model), "trainable": trainable * 16,
            "activations": int(layout.n_layers * per_layer * dtype_bytes / 2)}


def finetune_line(model: torch.nn.Module, trainable: int, batch_size: int, seq_len: int) -> str:
    """One line: what a fine-tuning run holds, and what is free where the model is."""
    parts = finetune_estimate(model, trainable, batch_size, seq_len)
    device = next(model.parameters()).device
    free = free_device_bytes(device) if device.type == "cuda" else free_host_bytes()
    return (f"Memory: model {parts['weights'] / GB:.2f} GB + trainable parameters with gradients and optimizer "
            f"{parts['trainable'] / GB:.3f} GB + activations about {parts['activations'] / GB:.2f} GB at batch size "
            f"{batch_size} x {seq_len} tokens = {sum(parts.values()) / GB:.2f} GB"
            + (f"; {free / GB:.1f} GB free." if free is not None else "."))
