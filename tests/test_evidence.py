"""Evidence beyond the main rows: "without its outlier channels" rows, another control's rows, the dose-response.

The tiny Llama of test_experiments (component 0 a planted group, component 1 an ordinary
one) gets capture statistics in which channel 0 of each layer (one of the planted group's)
is massive, so component 0 has a row without its massive channels. The dose-response
scales component 0 by alpha: alpha 1 must change nothing (exactly 0), alpha 0 must equal
the lesion row, and the rows, files, figures and reading must carry it all.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from test_experiments import LAYERS, PLANTED, make_config, make_template

from fnweb.channel_stats import ChannelStats
from fnweb.errors import FnwebError
from fnweb.experiment_plots import dose_figure, write_figures
from fnweb.experiment_results import ExperimentResult
from fnweb.experiment_tables import lesion_table
from fnweb.experiments import run_experiment
from fnweb.experiments.config import MAX_DOSES

MASSIVE_CHANNEL = PLANTED[0]


def template_with_stats():
    template = make_template()
    scale = np.tile(np.arange(1, template.width + 1, dtype=np.float32), (len(LAYERS), 1))
    scale[:, MASSIVE_CHANNEL] = 1e5  # orders above its layer's median
    template.stats = ChannelStats.from_moments(LAYERS, np.zeros(scale.size), scale.ravel(), tokens=50)
    return template


@pytest.fixture(scope="module")
def evidence(planted_lm):
    config = make_config(also_control="magnitude", dose_component=0, dose_alphas=(2.0, 0.0, 1.0), dose_draws=2,
                         curve=False)
    return run_experiment(planted_lm, template_with_stats(), config)


def test_each_component_gets_its_variant_rows(evidence):
    main = {r.component: r for r in evidence.rows}
    labels = [(v.component, v.variant) for v in evidence.variants]
    assert labels == [("0", "vs same count and scale per layer"), ("1", "vs same count and scale per layer"),
                      ("0", "without massive channels")]  # component 1 holds no massive channel: no such row
    spared = evidence.variants[-1]
    assert spared.neurons == main["0"].neurons - len(LAYERS) and spared.massive == "spared"
    assert 0 < spared.network["dce"] < main["0"].network["dce"]  # the massive channels carried part of it
    magnitude = evidence.variants[0]
    assert magnitude.control == "magnitude" and magnitude.network == main["0"].network  # same lesion, other twins
    assert magnitude.random["dce"].mean != main["0"].random["dce"].mean
    assert all("p_holm" in v.tests for v in evidence.variants)  # Holm within each family of variant rows
    names = [cells[0] for cells in lesion_table(evidence)[1]]
    assert names[-1] == "0 (without massive channels)"
    assert "Component 0 without massive channels: +" in evidence.reading()


def test_the_dose_response_is_zero_at_one_and_the_lesion_at_zero(evidence):
    dose = evidence.dose
    assert [p.alpha for p in dose.points] == [0.0, 1.0, 2.0] and dose.controls == ["layer", "magnitude"]
    at = {p.alpha: p for p in dose.points}
    assert at[1.0].network == {"dce": 0.0, "kl": 0.0}  # alpha 1 leaves the model exactly as it is
    assert all(at[1.0].random[c]["dce"].mean == 0.0 for c in dose.controls)
    assert at[0.0].network["dce"] == evidence.rows[0].network["dce"]  # alpha 0 is the lesion
    assert at[2.0].network["kl"] > 0 and dose.share == evidence.rows[0].share
    fig = dose_figure(evidence)
    assert [list(t.x) for t in fig.data] == [[0.0, 1.0, 2.0]] * 3
    assert "Scaling component 0 by α = 0 changed cross-entropy by +" in evidence.reading()


def test_files_round_trip_with_variants_and_dose(evidence, tmp_path):
    paths = evidence.save(tmp_path)
    again = ExperimentResult.from_json(paths["json"].read_text())
    assert again.variants == evidence.variants and again.dose == evidence.dose
    lines = list(csv.DictReader(io.StringIO(paths["dose"].read_text())))
    assert [float(line["alpha"]) for line in lines] == [0.0, 1.0, 2.0]
    assert float(lines[1]["dce"]) == 0.0 and "magnitude_dce_mean" in lines[0]
    assert "dose" in write_figures(evidence, tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (dict(dose_component=0, dose_alphas=(0.0, 11.0)), "α must be a finite number from 0 to 10"),
    (dict(dose_component=0, dose_alphas=tuple(range(MAX_DOSES + 1))), f"2 to {MAX_DOSES} different factors"),
    (dict(intervention="scale", alpha=-1.0), "α must be a finite number"),
    (dict(intervention="preserve"), "Each row changes its component's own channels"),
    (dict(control="size"), "Unknown control 'size'"),
    (dict(dose_component=0, dose_draws=0), "Dose-response draws must lie between 1 and"),
])
def test_bad_evidence_settings_are_refused(planted_lm, overrides, message):
    with pytest.raises(FnwebError, match=message):
        run_experiment(planted_lm, template_with_stats(), make_config(**overrides))


@pytest.mark.parametrize("overrides", [dict(intervention="mean"), dict(control="magnitude"),
                                       dict(massive="undrawn")])
def test_settings_that_need_statistics_say_a_rebuild_adds_them(planted_lm, overrides):
    with pytest.raises(FnwebError, match="Rebuild the template"):
        run_experiment(planted_lm, make_template(), make_config(**overrides))


def test_a_template_without_statistics_still_runs_its_defaults_with_a_note(planted_lm):
    result = run_experiment(planted_lm, make_template(), make_config(dose_component=0, dose_alphas=(0.0, 1.0),
                                                                     dose_draws=1, curve=False))
    assert result.variants == [] and result.dose.controls == ["layer"]
    assert any("no component has a row without its massive-activation channels" in w for w in result.warnings)
    assert any("no magnitude control" in w for w in result.warnings)


# ---- fnexperiment: the evidence options ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_file(tiny_lm, tmp_path_factory):
    """A template with build settings and capture statistics, built on the tiny Llama the CLI loads from disk."""
    from fnweb.build import BuildConfig, build_template
    from fnweb.prompts import PromptSource

    config = BuildConfig(sources=[PromptSource("builtin:factual")], samples_per_dataset=8, max_tokens=32, k=2,
                         stability_runs=0, card_contexts=0)
    return build_template(tiny_lm, config).template.save(tmp_path_factory.mktemp("built") / "t.json")


def test_fnexperiment_runs_seeds_controls_dose_and_recurrence(tiny_model_dir, built_file, tmp_path, capsys):
    from fnweb.cli.experiment import main
    from fnweb.seed_results import SeedsResult

    out = tmp_path / "out"
    code = main([str(tiny_model_dir), str(built_file), "builtin:arithmetic", "--samples_per_dataset", "4",
                 "--draws", "2", "--max_tokens", "48", "--no_curve", "--control", "magnitude", "--also_control",
                 "layer", "--dose_component", "0", "--dose_alphas", "0,1", "--dose_draws", "1", "--template_seeds",
                 "2", "--recurrence", "--recurrence_k", "2", "--output", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    for name in ("seeds.json", "seeds.csv", "experiment.json", "experiment_dose.csv", "experiment_dose.html",
                 "recurrence.json", "recurrence.csv", "recurrence.html"):
        assert (out / name).exists(), name
    result = ExperimentResult.load(out / "experiment.json")
    assert result.settings["control"] == "magnitude" and result.dose.controls == ["layer", "magnitude"]
    assert {v.variant for v in result.variants} >= {"vs same count per layer"}
    assert SeedsResult.load(out / "seeds.json").seeds == [0, 1]
    assert "Across 2 template seeds" in printed.out and "Per-sample ICA (k = 2)" in printed.out


@pytest.mark.parametrize("extra, message", [
    (["--intervention", "scale", "--alpha", "12"], "α must be a finite number from 0 to 10"),
    (["--draws", "500"], "Random draws must lie between 1 and 200"),
    (["--template_seeds", "0"], "Template seeds must lie between 1 and"),
    (["--recurrence", "--recurrence_k", "0"], "Per-sample components k must lie between 1 and"),
    (["--dose_component", "0", "--dose_alphas", "0,x"], "Dose-response factors must be comma-separated numbers"),
    (["--task", "sentiment", "--task_source", "NOLABELS"], "label"),
])
def test_fnexperiment_bad_evidence_input_is_one_line(tiny_model_dir, built_file, tmp_path, capsys, extra, message):
    from fnweb.cli.experiment import main

    nolabels = tmp_path / "nolabels.jsonl"
    nolabels.write_text('{"text": "A fine film."}\n{"text": "A dull film."}\n')
    extra = [str(nolabels) if x == "NOLABELS" else x for x in extra]
    code = main([str(tiny_model_dir), str(built_file), "builtin:arithmetic", "--samples_per_dataset", "4",
                 "--draws", "2", "--max_tokens", "48", "--no_curve", "--output", str(tmp_path / "o"), "--quiet",
                 *extra])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in line]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_fnexperiment_says_an_older_template_needs_a_rebuild(tiny_model_dir, tmp_path, capsys):
    from fnweb.cli.experiment import main

    older = make_template().save(tmp_path / "older.json")  # no capture statistics
    code = main([str(tiny_model_dir), str(older), "builtin:arithmetic", "--control", "magnitude", "--quiet",
                 "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "magnitude control" in err and "Rebuild the template" in err and "fnbuildtemplates" in err


def test_template_seeds_test_each_seeds_match_of_the_chosen_components(tiny_lm, built_file):
    from fnweb.template_seeds import run_seeds
    from fnweb.templates import Template

    config = make_config(components=[1], draws=2, curve=False, max_tokens=48, samples_per_dataset=5)
    result = run_seeds(tiny_lm, Template.load(built_file), config, seeds=2)
    assert [e.reference for e in result.effects] == [1, 1] and [m.component for m in result.matched] == [1]
    for effect, experiment in zip(result.effects, result.experiments):
        assert effect.row is not None and effect.row.component == str(effect.component)
        assert [r.component for r in experiment.rows] == [str(effect.component)]  # its match, not its own id 1


def test_template_seeds_reuse_the_maps_of_a_template_just_built(tiny_lm, monkeypatch):
    import fnweb.template_seeds as seeds_module
    from fnweb.build import BuildConfig, build_template
    from fnweb.prompts import PromptSource

    config = BuildConfig(sources=[PromptSource("builtin:factual")], samples_per_dataset=8, max_tokens=32, k=2,
                         stability_runs=0, card_contexts=0)
    built = build_template(tiny_lm, config)
    seeds_built = []
    monkeypatch.setattr(seeds_module, "build_template",
                        lambda lm, cfg, **kw: seeds_built.append(cfg.seed) or build_template(lm, cfg, **kw))
    made = list(seeds_module.build_seeds(tiny_lm, built.template, 2, lambda e: None, None, [], built.maps))
    assert seeds_built == [1] and made[0][1] is built.template and made[0][2] is built.maps


def test_one_evidence_stream_runs_the_experiment_then_recurrence(tiny_lm, built_file):
    from fnweb.evidence_run import evidence_stream
    from fnweb.progress import StopFlag
    from fnweb.recurrence import RecurrenceConfig
    from fnweb.templates import Template

    template = Template.load(built_file)
    config = make_config(draws=2, curve=False, max_tokens=48, samples_per_dataset=5)
    recurrence = RecurrenceConfig(sources=config.sources, samples_per_dataset=2, k=2, max_tokens=48)
    snapshots = [(s.experiment, s.recurrence) for s in evidence_stream(tiny_lm, template, config, 1, recurrence)]
    last_experiment, last_recurrence = snapshots[-1]
    assert not last_experiment.partial and not last_recurrence.partial and len(last_recurrence.samples) == 4
    assert snapshots[0][1] is None  # the experiment first
    stop = StopFlag()
    for snapshot in evidence_stream(tiny_lm, template, config, 1, recurrence, stop=stop):
        state = snapshot
        stop.set()  # after the first prompt
    assert state.experiment.partial and state.recurrence is None and "Stopped" in state.experiment.partial_note
    with pytest.raises(FnwebError, match="Per-sample components k must lie"):
        next(evidence_stream(tiny_lm, template, config, 1, RecurrenceConfig(sources=config.sources, k=0)))
