"""The benchmark's sections run on small inputs and measure what they say (not how fast)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fnweb.capture import Activations
from tiny import planted

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fnweb_bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_capture_section_reports_the_ratio_of_its_two_rates(bench, tiny_lm):
    rng = np.random.default_rng(0)
    sequences = [rng.integers(5, 90, size=int(n)).tolist() for n in rng.integers(3, 20, size=24)]
    result, acts = bench.bench_capture(tiny_lm, sequences, "neurons", rounds=1)
    assert result["tokens"] == acts.n_tokens == sum(len(s) for s in sequences)
    assert result["ratio"] == pytest.approx(result["capture_tokens_per_s"] / result["plain_tokens_per_s"])
    assert result["ok"] == (result["ratio"] >= 0.90)


def test_decomposition_section_finds_fnweb_and_the_original_method_agree(bench, tmp_path):
    # On planted sources both methods must find the same maps; the section runs each in
    # its own process and reads back their maps, times and peak memory.
    matrix, _truth = planted(tokens=2000, channels=300, k=4, seed=1, noise=0.2)
    acts = Activations(matrix=matrix, layers=[0], width=300, site="neurons",
                       mean=matrix.float().mean(0), std=matrix.float().std(0, unbiased=False))
    result = bench.bench_decomposition(acts, tmp_path, k=4)
    assert result["matched_abs_correlation"] > 0.95 and result["mask_iou"] > 0.5
    assert result["fnweb_s"] > 0 and result["reference_s"] > 0 and result["fnweb_peak_mb"] > 0
    assert "decomposition" in bench.table({"machine": "test", "decomposition": result})
