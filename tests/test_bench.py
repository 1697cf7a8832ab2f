"""The benchmark's sections run on small inputs and measure what they say (not how fast)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tiny import planted

from fnweb.capture import Activations

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
    assert {"read and standardise", "power iterations", "final pass", "ica"} <= set(result["fnweb_parts"])
    assert sum(result["fnweb_parts"].values()) <= result["fnweb_s"] and result["fnweb_stability_s"] > 0
    printed = bench.table({"machine": "test", "decomposition": result})
    assert "decomposition" in printed and "power iterations" in printed


def test_busy_section_times_both_methods_while_every_core_is_taken(bench, tmp_path):
    import scale_out

    matrix, _truth = planted(tokens=1500, channels=200, k=3, seed=2)
    acts = Activations(matrix=matrix, layers=[0], width=200, site="neurons",
                       mean=matrix.float().mean(0), std=matrix.float().std(0, unbiased=False))
    result = scale_out.bench_busy(bench.run_child, bench.save_acts(acts, tmp_path / "a.npz"), tmp_path, k=3,
                                  busy=1)
    assert result["busy_processes"] >= 1 and result["speedup"] == result["reference_s"] / result["fnweb_s"]
    assert "busy machine" in bench.table({"machine": "test", "busy": result})


def test_template_agreement_counts_identical_masks(bench, tmp_path):  # bench: puts bench/ on the path
    import json

    import scale_out

    def template(channels):
        return {"templates": {"0": {"1": channels}, "1": {"2": [3]}},
                "fnweb": {"ica": {"explained_variance": [2.0, 1.0]}}}

    (tmp_path / "a.json").write_text(json.dumps(template([1, 2, 3, 4])))
    (tmp_path / "b.json").write_text(json.dumps(template([1, 2, 3])))
    agreement = scale_out.template_agreement(tmp_path / "a.json", tmp_path / "b.json")
    assert agreement["identical_masks"] == "1/2" and agreement["mask_iou"] == pytest.approx((0.75 + 1) / 2)


def test_the_capped_section_reads_the_tokens_of_a_build_that_ran_out(bench):  # bench: puts bench/ on the path
    import scale_out

    from fnweb.fit import build_estimate

    said = str(build_estimate(500_000_000, True, 2_266, 2_266, 46_080, 2, 10, free=5 * 10**8).ran_out())
    failed = scale_out._capped_point(4, 264.0, {"error": said, "peak_mb": 1318.0, "peak_data_mb": 1494.0})
    assert failed["tokens"] == 2_266 and "--memmap_folder DIR" in failed["error"]
    mapped = scale_out._capped_point(17, 553.0, {"all_tokens": 9_617, "phases": {"capture": 495.0, "decompose": 12.0},
                                                 "peak_mb": 1270.0, "peak_data_mb": 1311.0})
    printed = scale_out.lines({"capped": {"cap_mb": 1536, "in_memory": [failed], "largest_in_memory_tokens": 1_732,
                                          "mapped": mapped, "ratio_to_failed": 9_617 / 2_266, "leftover_files": 0,
                                          "ok": True}})
    assert printed == [
        "capped         data limit 1,536 MB: in memory 1,732 tokens built, 2,266 failed (ran out); mapped 9,617 "
        "tokens (4.2x the failed) in 507 s (52.7 s/1k), peak 1270 MB resident, 1311 MB data; files left 0  "
        "(target >= 4x)  OK"]
