"""Template seeds: a template rebuilt with other seeds, components matched by map correlation, effects per seed.

End to end on a tiny Llama: a 3-component template built from arithmetic prompts is
rebuilt with seeds 0 and 1; the file's own seed must come back identical (so the file's
template is the one measured, and its components match themselves at r = 1), every
seed is measured on the same held-out prompts, kept apart from every seed's template
prompts, and the table, files, stop and bad input behave. How results across seeds are
combined (Fisher, Holm, the one-seed call-out) is checked on rows with known p-values.
"""

from __future__ import annotations

import csv
import io

import pytest

from fnweb.build import BuildConfig, build_template
from fnweb.errors import FnwebError
from fnweb.experiment_results import LesionRow
from fnweb.experiments import ExperimentConfig, template_prompts
from fnweb.experiments.heldout import heldout_pairs
from fnweb.metrics import Stat
from fnweb.progress import StopFlag
from fnweb.prompts import PromptSource, load_pairs
from fnweb.seed_results import SeedEffect, SeedsResult, combine
from fnweb.template_seeds import run_seeds, seed_build_config, seeds_stream


@pytest.fixture(scope="module")
def template(tiny_lm):
    config = BuildConfig([PromptSource("builtin:arithmetic"), PromptSource("builtin:factual")], samples_per_dataset=4,
                         max_tokens=48, k=3, seed=0, stability_runs=0, card_contexts=0)
    made = build_template(tiny_lm, config).template
    made.name = "arith"
    return made


def config(**overrides) -> ExperimentConfig:
    values = dict(sources=[PromptSource("builtin:factual")], samples_per_dataset=4, draws=3, max_tokens=40)
    return ExperimentConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def seeds(tiny_lm, template) -> SeedsResult:
    return run_seeds(tiny_lm, template, config(), seeds=2)


def test_each_seed_is_built_matched_and_measured(seeds, template):
    assert seeds.seeds == [0, 1] and not seeds.partial and len(seeds.experiments) == 2
    first, second = seeds.experiments
    assert first.settings["template"] == "arith"  # the file's own template: the rebuild gave the same masks
    assert second.settings["template_seed"] == 1 and second.curve == [] and first.curve
    assert [e.correlation for e in seeds.effects if e.seed == 0] == [1.0, 1.0, 1.0]
    assert [e.component for e in seeds.effects if e.seed == 0] == [0, 1, 2]
    assert sorted(e.component for e in seeds.effects if e.seed == 1) == [0, 1, 2]  # one to one
    assert all(-1.0 <= e.correlation <= 1.0 and e.row is not None for e in seeds.effects)
    for e in seeds.effects:
        assert e.row.component == str(e.component)  # the row measured on that seed's own component
    assert [m.component for m in seeds.matched] == [0, 1, 2]
    assert all(m.seeds == [0, 1] and m.fisher_p is not None for m in seeds.matched)
    assert "Across 2 template seeds (0, 1" in seeds.reading()


def test_every_seed_is_measured_on_the_same_prompts_kept_apart_from_every_seed(tiny_lm, seeds, template):
    first, second = seeds.experiments
    assert first.prompts == second.prompts == 4 and first.tokens == second.tokens
    other = build_template(tiny_lm, seed_build_config(template, 1)).template
    mine, theirs = template_prompts(template)[0], template_prompts(other)[0]
    factual = {" ".join(p.prompt.split()) for p in load_pairs(PromptSource("builtin:factual"))}
    left_out = len((mine | theirs) & factual)
    assert left_out > len(mine & factual)  # the second seed sampled other factual prompts...
    note = f"builtin:factual: {left_out} of its 94 prompts were used to build the template"
    assert any(note in w for w in first.warnings) and any(note in w for w in second.warnings)  # ...left out of both


def test_files_round_trip(seeds, tmp_path):
    paths = seeds.save(tmp_path)
    assert SeedsResult.load(paths["seeds"]) == seeds
    lines = list(csv.DictReader(io.StringIO(paths["seeds_csv"].read_text())))
    assert len(lines) == 6 and lines[0]["component"] == "0" and lines[0]["map_correlation"] == "1.0"
    assert float(lines[3]["p"]) == pytest.approx(seeds.effects[3].p())


def row(p: float, component: str = "0") -> LesionRow:
    return LesionRow(component, [int(component)], 10, 0.01, 8, {"dce": 0.5}, {"dce": Stat(0.1, 0.05)},
                     {"dce": 5.0}, tests={"p": Stat(p), "excess": Stat(0.4, None, 0.2, 0.6)})


def test_fisher_holm_and_the_one_seed_call_out():
    effects = [SeedEffect(0, s, 0, 0.9, row(1 / 21)) for s in range(3)]  # matters in every seed
    effects += [SeedEffect(1, s, 1, 0.8, row(p, "1")) for s, p in zip(range(3), (1 / 21, 0.6, 0.9))]
    matched = combine(effects, level=0.05)
    assert matched[0].matters == [0, 1, 2] and matched[1].matters == [0]
    assert matched[0].fisher_p == pytest.approx(0.0056, abs=1e-4)
    assert matched[0].fisher_p_holm == pytest.approx(2 * matched[0].fisher_p) and matched[0].survives
    assert matched[1].fisher_p > 0.05 and not matched[1].survives
    result = SeedsResult([0, 1, 2], effects, matched, experiments=[None, None, None], level=0.05)
    text = result.reading()
    assert "component 0 (matched at r = +0.90, +0.90; beyond random +0.400, +0.400, +0.400 nats" in text
    assert "Fisher 0.0056, Holm 0.0112) survive" in text
    assert "Mattering in one seed only (p at most 0.05 there, not elsewhere): component 1 (seed 0)" in text
    assert "Mattering in every seed: component 0" in text
    strict = SeedsResult([0, 1, 2], effects, combine(effects, level=0.01), [None] * 3, level=0.01)
    assert not strict.survivors() and "no component survives" in strict.reading()


def test_bad_input_and_stop(tiny_lm, template):
    with pytest.raises(FnwebError, match="Template seeds must lie between 1 and 10 \\(got 11\\)"):
        run_seeds(tiny_lm, template, config(), seeds=11)
    bare = type(template)(template.layers, template.width, template.components)
    with pytest.raises(FnwebError, match="records no build settings"):
        run_seeds(tiny_lm, bare, config(), seeds=2)
    stop = StopFlag()

    def progress(event):
        if event.phase == "measuring" and event.done >= 2:
            stop.set()

    snapshots = list(seeds_stream(tiny_lm, template, config(), 2, progress, stop))
    last = snapshots[-1]
    assert last.partial and last.partial_note.startswith("Stopped by request") and len(last.experiments) == 1
    assert last.experiments[0].partial and "PARTIAL RESULT" in last.reading()


def test_a_confirmation_leaves_the_first_seed_unmeasured_and_the_screens_prompts_out(tiny_lm, seeds, template):
    """Screen then confirm: seed 0 anchors the matching only; its held-out prompts are not scored again."""
    other = build_template(tiny_lm, seed_build_config(template, 1)).template
    used = template_prompts(template)[0] | template_prompts(other)[0]
    screened = {" ".join(p.prompt.split()) for p in heldout_pairs(config(), used)[0]}
    assert len(screened) == 4
    confirm = run_seeds(tiny_lm, template, config(components=[1]), seeds=2, exclude=screened, measure_first=False)
    assert confirm.seeds == [0, 1] and len(confirm.experiments) == 1 and not confirm.partial
    assert [e.seed for e in confirm.effects] == [1] and confirm.effects[0].reference == 1
    assert [m.seeds for m in confirm.matched] == [[1]]
    factual = {" ".join(p.prompt.split()) for p in load_pairs(PromptSource("builtin:factual"))}
    note = f"builtin:factual: {len((used | screened) & factual)} of its 94 prompts were used to build the template"
    assert any(note in w for w in confirm.experiments[0].warnings)  # the screen's four left out as well
    assert "Across 1 template seed (1; components matched to seed 0's" in confirm.reading()
