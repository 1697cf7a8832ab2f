"""The Experiments form's record read into a run's plan, and an experiment's link written and read back.

No model: the form reader and the link checks are plain functions of the record and the query.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from fnweb.errors import FnwebError
from fnweb.ui import experiment_links, links
from fnweb.ui.evidence_form import DEFAULTS
from fnweb.ui.experiments_tab import plan_from_form

BASE = dict(template="t", builtin=["factual", "code"], files=None, samples=8, draws=3, seed=2, max_tokens=64,
            leave_out=False, preserve_scope="network_layers")
EVIDENCE = dict(intervention="scale", alpha=1.5, control="magnitude", also_control="layer", template_seeds=3,
                recurrence=True, task="sentiment", dose_component="2")


def params(form: dict, model: str = "HuggingFaceTB/SmolLM2-135M-Instruct", ref: str = "hub:someone/tpl") -> dict:
    return dict(parse_qsl(experiment_links.query(model, ref, form)))


def test_the_form_reads_into_the_experiment_seeds_and_recurrence():
    plan = plan_from_form({**BASE, **EVIDENCE})
    config = plan.config
    assert [s.name for s in config.sources] == ["builtin:factual", "builtin:code"]
    assert (config.samples_per_dataset, config.draws, config.seed, config.max_tokens) == (8, 3, 2, 64)
    assert not config.exclude_template_prompts and config.preserve_scope == "network_layers"
    assert (config.intervention, config.alpha, config.control, config.also_control) == ("scale", 1.5, "magnitude",
                                                                                         "layer")
    assert (config.task, config.dose_component) == ("sentiment", 2)
    assert plan.seeds == 3
    recurrence = plan.recurrence
    assert recurrence is not None and recurrence.samples_per_dataset == 8 and recurrence.seed == 2
    assert [s.name for s in recurrence.sources] == ["builtin:factual", "builtin:code"]


def test_a_record_without_the_evidence_fields_runs_as_the_page_starts():
    plan = plan_from_form(BASE)
    config = plan.config
    assert (config.intervention, config.alpha, config.control, config.also_control) == ("lesion", None, "layer", None)
    assert config.task is None and config.dose_component is None
    assert plan.seeds == 1 and plan.recurrence is None
    # "0 = all" prompts per set: recurrence decomposes its own default number of samples, not one.
    assert plan_from_form({**BASE, "samples": 0, "recurrence": True}).recurrence.samples_per_dataset == 20


@pytest.mark.parametrize("change, message", [
    (dict(intervention="scale", alpha=10.5), "α must be a finite number from 0 to 10"),
    (dict(control="nope"), "Unknown control 'nope'; choose layer or magnitude."),
    (dict(also_control="strata"), "Unknown control 'strata'"),
    (dict(intervention="preserve"), "Unknown intervention 'preserve'"),
    (dict(task="poetry"), "Unknown task 'poetry'"),
    (dict(template_seeds=1.5), "Template seeds must be a whole number (got 1.5)."),
    (dict(dose_component="x"), "Dose-response component is 'x': enter a number."),
])
def test_bad_evidence_values_are_named(change, message):
    with pytest.raises(FnwebError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_from_form({**BASE, **change})


def test_an_experiment_link_round_trips_every_field():
    form = {**BASE, **EVIDENCE}
    query = params(form)
    assert query["kind"] == "experiment" and query["t"] == "hub:someone/tpl"
    link = experiment_links.parse(query)
    assert link.model == "HuggingFaceTB/SmolLM2-135M-Instruct" and link.hub == ("someone/tpl", None)
    assert link.form == {k: v for k, v in form.items() if k not in ("template", "files")}
    assert plan_from_form({**link.form, "template": None}) == plan_from_form(form)
    # The page's defaults travel too, and a saved template's reference is kept as it is.
    start = {**BASE, **DEFAULTS}
    saved = "saved:0123456789abcdef"
    again = experiment_links.parse(params(start, model="embedded:SmolLM2-135M-Instruct", ref=saved))
    assert again.saved_id == saved.removeprefix("saved:")
    assert again.form == {k: v for k, v in start.items() if k not in ("template", "files")}


def test_comparison_and_experiment_links_are_told_apart():
    query = params({**BASE, **EVIDENCE})
    assert experiment_links.is_experiment_link(query) and not links.is_link(query)
    comparison = {"v": "1", "m": "embedded:SmolLM2-135M-Instruct", "t": "preset", "p": "Hi", "cols": "baseline"}
    assert links.is_link(comparison) and not experiment_links.is_experiment_link(comparison)


def test_an_older_link_without_evidence_options_takes_the_defaults():
    query = {k: v for k, v in params(BASE).items() if k not in ("iv", "a", "ctl", "also", "ts", "rec", "task",
                                                                 "dose")}
    assert {k: experiment_links.parse(query).form[k] for k in DEFAULTS} == DEFAULTS


def test_a_bad_link_is_one_error_listing_every_bad_value():
    query = params({**BASE, **EVIDENCE})
    query.update(m="../../etc", t="file:/x", sets="factual,nope", draws="many", a="12", ctl="nearby", ts="11",
                 rec="yes", dose="1.5", v="9")
    with pytest.raises(FnwebError) as caught:
        experiment_links.parse(query)
    text = str(caught.value)
    assert text.startswith("This experiment link cannot be restored: it was made by another fnweb version ('9')")
    for fragment in ("its model '../../etc' is not a Hub id", "its template 'file:/x' is none of",
                     "its prompt sets 'factual,nope' are not among", "its random draws 'many' is not a whole number",
                     "its α must be a finite number from 0 to 10", "its control 'nearby' is none of layer, magnitude",
                     "its template seeds must lie between 1 and 10 (got 11)", "its recurrence 'yes' is neither 1 nor 0",
                     "its dose-response component '1.5' is not a component id"):
        assert fragment in text, fragment
    assert text.endswith("Ask for a new link, or set the experiment up by hand.")


def test_values_that_read_but_do_not_fit_are_checked_as_run_checks_them():
    query = params({**BASE, **EVIDENCE})
    query.update(draws="0")
    with pytest.raises(FnwebError, match="its random draws must lie between 1 and 200 \\(got 0\\)"):
        experiment_links.parse(query)
    del query["sets"]
    with pytest.raises(FnwebError, match=r"it has no prompt sets \('sets'\)"):
        experiment_links.parse(query)


def test_a_link_needs_a_named_template_and_a_built_in_set():
    with pytest.raises(FnwebError, match="This template cannot be named in a link"):
        experiment_links.query("embedded:SmolLM2-135M-Instruct", None, {**BASE, **EVIDENCE})
    with pytest.raises(FnwebError, match="A link can hold built-in prompt sets only"):
        experiment_links.query("embedded:SmolLM2-135M-Instruct", "preset", {**BASE, "builtin": []})
