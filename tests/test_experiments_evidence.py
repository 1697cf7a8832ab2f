"""The Experiments tab's handler with the evidence options, on a tiny model: every part shown, filed, and stoppable.

The handler runs as the page runs it (the form as one record, through the job runner);
the template is built here on the tiny Llama (so it has capture statistics and its
build recipe). What each part measures is tested in the engine's own tests; here, that
the tab asks for it, shows it, names the control and writes its files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fnweb.build import BuildConfig, build_template
from fnweb.models import ModelRequest
from fnweb.prompts import PromptSource
from fnweb.ui import experiments_tab
from fnweb.ui.state import Session

pytestmark = pytest.mark.usefixtures("one_thread")
FORM = dict(builtin=["factual"], files=None, samples=4, draws=2, seed=0, max_tokens=32, leave_out=True,
            preserve_scope="all_layers", intervention="lesion", alpha=1.0, control="magnitude", also_control="none",
            template_seeds=1, recurrence=True, task="none", dose_component="1")


@pytest.fixture(scope="module")
def session(tiny_model_dir, tiny_lm):
    config = BuildConfig([PromptSource("builtin:arithmetic")], samples_per_dataset=4, max_tokens=32, k=3, seed=0,
                         stability_runs=0, card_contexts=0)
    template = build_template(tiny_lm, config).template
    made = Session(model=ModelRequest(str(tiny_model_dir)))
    made.add(template, "built", "tiny")
    yield made
    made.close()


def text(html) -> str:
    return " ".join(re.sub("<[^>]+>", " ", str(html)).split())


def test_recurrence_and_dose_are_shown_named_and_filed(session):
    updates = list(experiments_tab.run_experiment_form(session, {"template": session.selected, **FORM}))
    progress = [text(u["status"]) for u in updates if "status" in u and "fn-progress" in str(u["status"])]
    assert any("Lesions and random controls" in p for p in progress) and any("Per-sample ICA" in p for p in progress)
    final = updates[-1]
    assert "Done in" in text(final["status"]) and "Recurrence: 4 samples decomposed." in text(final["status"])
    assert "same count and scale per layer" in final["reading"]  # the control used, named
    assert "Per-sample ICA (k = 10) on 4 samples" in final["reading"]
    assert final["recurrence_plot"]["visible"] and final["dose_plot"]["visible"]
    assert not final["seeds_table"]["visible"] and not final["accuracy_plot"]["visible"]  # not asked for
    table = final["recurrence_table"]["value"]
    assert list(table["component"]) == [0, 1, 2] and set(table["set"]) == {"builtin:factual"}
    names = sorted(Path(p).name for p in final["downloads"])
    assert names == ["experiment.json", "experiment_components.csv", "experiment_curve.csv", "experiment_dose.csv",
                     "recurrence.csv", "recurrence.json"]


def test_stop_keeps_what_was_measured(session):
    updates = []
    for update in experiments_tab.run_experiment_form(session, {"template": session.selected, **FORM,
                                                               "dose_component": ""}):
        updates.append(update)
        if update.get("lesion_table") is not None and len(update["lesion_table"]) and len(updates) > 2:
            experiments_tab.stop_experiment(session)  # the first measured rows are on the page: stop
    final = updates[-1]
    assert "PARTIAL RESULT" in text(final["status"]) and final["reading"].startswith("**Partial result (stopped).**")
    assert not final["recurrence_plot"]["visible"]  # stopped before recurrence: skipped
    assert sorted(Path(p).name for p in final["downloads"]) == ["experiment.json", "experiment_components.csv",
                                                                "experiment_curve.csv"]
