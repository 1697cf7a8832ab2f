"""Experiments: a planted important neuron group is found and beats its random control.

The tiny Llama here has one group of neurons (component 0) whose down-projection
columns are scaled up 30x, and a sharpened, untied LM head, so the group dominates the
output; component 1 is an ordinary group of the same size. The checks recompute the
engine's numbers one prompt at a time with the ``masked`` context (no stacking), so
the batched arithmetic is tested against a plain forward pass.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import tiny
import torch
import torch.nn.functional as F

from fnweb.errors import FnwebError
from fnweb.experiment_plots import lesion_figure, preservation_figure, write_figures
from fnweb.experiment_results import CURVE_METRICS, LESION_METRICS, ExperimentResult, beats_random
from fnweb.experiment_tables import curve_table, lesion_table, table_text
from fnweb.experiments import (
    STOPPED,
    ExperimentConfig,
    draw_seed,
    experiment_stream,
    heldout_pairs,
    run_experiment,
    template_prompts,
)
from fnweb.masks import MaskSpec, masked
from fnweb.metrics import METRICS
from fnweb.progress import StopFlag
from fnweb.prompts import PromptSource, encode_prompt_and_response
from fnweb.templates import Template, TemplateMeta

PLANTED = tiny.PLANTED  # neurons 0..5 of every layer, made loud by the planted_lm fixture (conftest.py)
ORDINARY = list(range(40, 46))
LAYERS = [0, 1, 2]


def make_template(width: int = tiny.INTERMEDIATE, samples: int = 5) -> Template:
    meta = TemplateMeta(
        model_id="tiny-llama", site="neurons", n_layers=3, width=width, k=2, threshold="percentile",
        threshold_value=98.0,
        datasets=[{"name": "builtin:factual", "config": None, "split": "train", "samples": samples}],
        samples_per_dataset=samples, seed=0,
        ica={"stability": {"runs": 5, "correlation": [0.97, 0.41], "mask_iou": [0.9, 0.2]}},
    )
    components = {0: {layer: PLANTED for layer in LAYERS}, 1: {layer: ORDINARY for layer in LAYERS}}
    return Template(LAYERS, width, components, meta=meta)


def make_config(**overrides) -> ExperimentConfig:
    values = dict(sources=[PromptSource("builtin:arithmetic"), PromptSource("builtin:factual")],
                  samples_per_dataset=3, draws=3, max_tokens=40)
    values.update(overrides)
    return ExperimentConfig(**values)


@pytest.fixture(scope="module")
def result(planted_lm) -> ExperimentResult:
    return run_experiment(planted_lm, make_template(), make_config())


def direct_ce(lm, template, config, spec, prompts: slice = slice(None)) -> float:
    """Token-weighted response cross-entropy, one prompt at a time, under ``masked`` (over ``prompts`` of the set)."""
    pairs, _ = heldout_pairs(config, template_prompts(template)[0])
    total, count = 0.0, 0
    for pair in pairs[prompts]:
        prompt, response = encode_prompt_and_response(lm.tokenizer, pair)
        ids = (prompt + response)[: config.max_tokens]
        with torch.inference_mode(), masked(lm.model, template, spec, lm.model_id):
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
        targets = torch.tensor(ids[len(prompt):])
        total += float(F.cross_entropy(logits[len(prompt) - 1 : -1].float(), targets, reduction="sum"))
        count += len(targets)
    return total / count


def test_planted_group_is_found_and_beats_its_random_control(result):
    planted, ordinary = result.rows
    assert planted.component == "0" and planted.neurons == 18 and planted.share == pytest.approx(18 / 192)
    assert planted.densest_layer == 0 and planted.densest_share == pytest.approx(6 / 64)
    assert planted.network["dce"] > 0.5  # the planted group matters...
    # ...far beyond random neurons
    assert planted.network["dce"] > planted.random["dce"].mean + 5 * planted.random["dce"].sd
    assert planted.ratio["dce"] is None or planted.ratio["dce"] > 20
    assert planted.ratio["kl"] > 20 and beats_random(planted)
    assert planted.network["dce"] > 10 * abs(ordinary.network["dce"])
    assert result.union.ids == [0, 1] and result.union.neurons == 36
    assert not result.partial and result.prompts == 6 and planted.prompts == 6
    assert result.curve[0].prompts == 3  # the other 3 ordered the components


def test_numbers_match_a_plain_forward_pass(planted_lm, result):
    template, config = make_template(), make_config()
    base = direct_ce(planted_lm, template, config, None)
    assert result.baseline_ce == pytest.approx(base, abs=1e-4)
    lesioned = direct_ce(planted_lm, template, config, MaskSpec((0,), "lesion"))
    assert result.rows[0].network["ce"] == pytest.approx(lesioned, abs=1e-4)
    assert result.rows[0].network["dce"] == pytest.approx(lesioned - base, abs=1e-4)
    draws = [direct_ce(planted_lm, template, config, MaskSpec((0,), "lesion", random_seed=draw_seed(0, d))) - base
             for d in range(3)]
    mean = sum(draws) / 3
    assert result.rows[0].random["dce"].mean == pytest.approx(mean, abs=1e-4)
    assert result.rows[0].random["dce"].sd == pytest.approx(torch.tensor(draws).std().item(), abs=1e-4)
    kept = direct_ce(planted_lm, template, config, MaskSpec((0,), "preserve"), slice(1, None, 2))  # the scoring half
    assert result.curve[0].network["ce"] == pytest.approx(kept, abs=1e-4)


def test_preservation_curve(result):
    assert [p.m for p in result.curve] == [1, 2]
    assert result.curve[0].ids == [0]  # ordered by lesion effect: the planted group first
    shares = [p.share_kept for p in result.curve]
    assert shares == sorted(shares) and shares[0] == pytest.approx(18 / 192)
    kls = [p.network["kl"] for p in result.curve]
    assert kls == sorted(kls, reverse=True)  # keeping more stays closer to the unchanged model
    first = result.curve[0]
    assert first.network["ce"] < first.random["ce"].mean - 3 * first.random["ce"].sd
    assert first.network["kl"] < 0.1 * first.random["kl"].mean


def test_files_round_trip(result, tmp_path):
    paths = result.save(tmp_path)
    assert ExperimentResult.load(paths["json"]) == result
    rows = list(csv.DictReader(io.StringIO(paths["components"].read_text())))
    assert [r["component"] for r in rows] == ["0", "1", "union"]
    assert float(rows[0]["dce"]) == pytest.approx(result.rows[0].network["dce"])
    assert float(rows[0]["random_dce_std"]) == pytest.approx(result.rows[0].random["dce"].sd)
    assert [r["stability"] for r in rows] == ["0.97", "0.41", ""]  # from the template's build; none for a union
    curve = list(csv.DictReader(io.StringIO(paths["curve"].read_text())))
    assert [int(p["m"]) for p in curve] == [1, 2] and curve[1]["ids"] == "0 1"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    figures = write_figures(result, tmp_path)
    assert 'src="plotly.min.js"' in figures["lesion"].read_text()
    assert figures["plotly.js"].stat().st_size > 100_000


@pytest.mark.parametrize("key", LESION_METRICS)
def test_every_lesion_metric_reaches_the_files_the_tables_and_the_figure(result, key, tmp_path):
    metric = METRICS[key]
    measured = key != "acc"  # accuracy needs a multiple-choice set, which this run has not
    rows = list(csv.DictReader(io.StringIO(result.components_csv())))
    assert {key, f"random_{key}_mean", f"random_{key}_std"} <= set(rows[0])
    assert (f"{key}_ratio" in rows[0]) == metric.ratio
    headers, cells = lesion_table(result)
    assert (metric.short in headers) == measured and (f"random {metric.short} (mean ± sd)" in headers) == measured
    if measured:
        row = result.rows[0]
        assert float(rows[0][key]) == pytest.approx(row.network[key])
        assert cells[0][headers.index(metric.short)] == metric.format(row.network[key])
        assert list(lesion_figure(result, key).data[0].y) == pytest.approx([r.network[key] for r in result.lesion_rows])
        assert metric.short in table_text(result)
    assert ExperimentResult.load(result.save(tmp_path)["json"]).rows[0].random[key] == result.rows[0].random[key]


@pytest.mark.parametrize("key", CURVE_METRICS)
def test_every_curve_metric_reaches_the_file_and_the_table(result, key):
    rows = list(csv.DictReader(io.StringIO(result.curve_csv())))
    assert {key, f"random_{key}_mean", f"random_{key}_std"} <= set(rows[0])
    headers, cells = curve_table(result)
    if key != "acc":
        assert cells[1][headers.index(METRICS[key].short)] == METRICS[key].format(result.curve[1].network[key])
        assert list(preservation_figure(result, key).data[1].y) == pytest.approx(
            [p.random[key].mean for p in result.curve])


def test_results_written_before_metrics_were_grouped_still_load():
    """Older files hold one field per metric and statistic (dce, random_dce_mean, random_dce_std, dce_ratio, ...)."""
    path = Path(__file__).parent.parent / "docs" / "figures" / "embedded_neurons_p98.json"
    raw = json.loads(path.read_text())
    old = ExperimentResult.load(path)
    row, flat = old.rows[5], raw["rows"][5]
    assert row.network["dce"] == flat["dce"] and row.network["ce"] == flat["ce"] and row.network["acc"] is None
    assert row.random["dce"].mean == flat["random_dce_mean"] and row.random["kl"].sd == flat["random_kl_std"]
    assert row.ratio == {"dce": flat["dce_ratio"], "kl": flat["kl_ratio"]}
    assert old.curve[0].random["ce"].mean == raw["curve"][0]["random_ce_mean"]
    assert "lesioning component 5" in old.reading() and beats_random(row)
    assert ExperimentResult.from_json(old.to_json()) == old  # and they are written in today's form


def test_reading_and_figures(result):
    text = result.reading()
    assert "lesioning component 0 (9.4 % of neurons; 9.4 % of layer 0)" in text and "random neurons" in text
    assert "PARTIAL" not in text
    bars = lesion_figure(result)
    assert [len(t.x) for t in bars.data] == [3, 3]
    assert list(bars.data[1].error_y.array) == pytest.approx([r.random["dce"].sd for r in result.rows + [result.union]])
    curve = preservation_figure(result, "kl")
    assert list(curve.data[0].y) == pytest.approx([p.network["kl"] for p in result.curve])
    with pytest.raises(FnwebError, match="Unknown metric"):
        lesion_figure(result, "f1")


def test_overlap_is_left_out_or_counted():
    template = make_template(samples=5)
    used, notes = template_prompts(template)
    assert len(used) == 5 and not notes
    keep = make_config(sources=[PromptSource("builtin:factual")], samples_per_dataset=10,
                       exclude_template_prompts=False)
    pairs, warnings = heldout_pairs(keep, used)
    assert len(pairs) == 10 and "5 of 10 held-out prompts (50 %)" in warnings[0]
    pairs, notes = heldout_pairs(make_config(sources=[PromptSource("builtin:factual")], samples_per_dataset=10), used)
    assert len(pairs) == 10 and not any(" ".join(p.prompt.split()) in used for p in pairs)
    assert "5 of its 94 prompts were used to build the template" in notes[0]


def test_template_without_datasets_warns():
    template = make_template()
    template.meta = None
    used, notes = template_prompts(template)
    assert used is None and "cannot be checked" in notes[0]


def test_too_few_prompts_for_the_draws(planted_lm):
    config = make_config(sources=[PromptSource("builtin:arithmetic")], samples_per_dataset=3, draws=5)
    with pytest.raises(FnwebError, match="3 usable prompts; an experiment needs at least 4"):
        run_experiment(planted_lm, make_template(), config)
    short = make_config(sources=[PromptSource("builtin:arithmetic")], samples_per_dataset=4, max_tokens=30)
    with pytest.raises(FnwebError, match=r"no tokens left to score within max tokens \(30\)"):
        run_experiment(planted_lm, make_template(), short)
    with pytest.raises(FnwebError, match="Random draws"):
        run_experiment(planted_lm, make_template(), make_config(draws=0))


def test_template_for_another_model(planted_lm):
    with pytest.raises(FnwebError, match="made for another model"):
        run_experiment(planted_lm, make_template(width=128), make_config())


def test_components_too_big_for_a_random_control_are_left_out(planted_lm):
    template = make_template()
    template.components[2] = {layer: list(range(10, 40)) for layer in LAYERS}  # 30 of 64: a control still fits
    template.components[3] = {0: list(range(0, 40))}  # 40 of 64: no room for a control
    result = run_experiment(planted_lm, template, make_config(draws=1))
    assert [r.component for r in result.rows] == ["0", "1", "2"]
    assert any(w.startswith("Component 3 was left out: Layer 0 has 40 selected neurons") for w in result.warnings)
    assert result.union is None and any("union of all components" in w for w in result.warnings)
    assert 1 <= len(result.curve) < 3 and result.curve[0].ids == [0]
    template.components = {3: template.components[3]}
    with pytest.raises(FnwebError, match="No component can be compared with a random control"):
        run_experiment(planted_lm, template, make_config(draws=1))


def test_stop_mid_run_gives_a_partial_result(planted_lm):
    stop = StopFlag()

    def progress(event):
        if event.phase == "measuring" and event.done >= 4:
            stop.set()

    snapshots = list(experiment_stream(planted_lm, make_template(), make_config(), progress, stop))
    last = snapshots[-1]
    assert last.partial and last.partial_note.startswith(STOPPED)
    assert 0 < last.rows[0].prompts < 6 and last.curve == []
    assert "PARTIAL RESULT" in last.reading()
    assert ExperimentResult.from_json(last.to_json()).partial


def test_task_accuracy_under_each_lesion(planted_lm):
    config = make_config(draws=2, curve=False, task="sentiment", task_items=6)
    result = run_experiment(planted_lm, make_template(), config)
    assert result.task["name"] == "sentiment" and result.task["items"] == 6 and result.task["chance"] == 0.5
    sixths = [i / 6 for i in range(7)]
    assert result.baseline_acc in sixths and result.rows[0].network["acc"] in sixths
    assert result.union.random["acc"].mean is not None and result.settings["task_items"] == 6
    low, high = result.rows[0].tests["acc"].low, result.rows[0].tests["acc"].high
    assert 0.0 <= low <= result.rows[0].network["acc"] <= high <= 1.0
    assert "Accuracy on the sentiment task (6 items; chance 0.50)" in result.reading()
    assert float(list(csv.DictReader(io.StringIO(result.components_csv())))[0]["acc_high"]) == pytest.approx(high)
    with pytest.raises(FnwebError, match="has no labels for the sentiment task"):
        run_experiment(planted_lm, make_template(), make_config(task="sentiment", task_source="builtin:factual"))
    with pytest.raises(FnwebError, match="Unknown task 'poetry'"):
        run_experiment(planted_lm, make_template(), make_config(task="poetry"))


def test_cli_writes_the_files(tiny_model_dir, tmp_path, capsys):
    from fnweb.cli.experiment import main

    template_path = make_template().save(tmp_path / "t.json")
    out = tmp_path / "out"
    code = main([str(tiny_model_dir), str(template_path), "builtin:arithmetic", "--samples_per_dataset", "4",
                 "--draws", "2", "--max_tokens", "48", "--output", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Baseline cross-entropy" in printed.out and "lesioning component" in printed.out
    for name in ("experiment.json", "experiment_components.csv", "experiment_curve.csv",
                 "experiment_lesion.html", "experiment_preservation.html"):
        assert (out / name).exists(), name
    assert ExperimentResult.load(out / "experiment.json").settings["draws"] == 2
    code = main([str(tiny_model_dir), str(tmp_path / "missing.json"), "builtin:arithmetic"])
    assert code == 2 and "Template file not found" in capsys.readouterr().err


def test_preserve_scope_reaches_the_curve_and_is_recorded(planted_lm, tmp_path):
    template = make_template()
    template.components = {0: {0: PLANTED, 2: PLANTED}, 1: {layer: ORDINARY for layer in LAYERS}}  # 0: none in layer 1
    config = make_config(draws=1, samples_per_dataset=2, preserve_scope="network_layers")
    result = run_experiment(planted_lm, template, config)
    assert result.settings["preserve_scope"] == "network_layers"
    first = result.curve[0]
    kept = MaskSpec(tuple(first.ids), "preserve", preserve_scope="network_layers")
    assert first.network["ce"] == pytest.approx(direct_ce(planted_lm, template, config, kept, slice(1, None, 2)),
                                                abs=1e-4)  # the curve scores the other half of the prompts
    assert first.ids == [0]  # the planted group, strongest lesion effect
    assert first.share_kept == pytest.approx((64 + 12) / 192)  # layer 1 is left whole: its 64 channels are kept
    assert ExperimentResult.load(result.save(tmp_path)["json"]).settings["preserve_scope"] == "network_layers"
    with pytest.raises(FnwebError, match="Unknown preserve scope"):
        make_config(preserve_scope="layers").validate()
