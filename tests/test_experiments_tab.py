"""The Experiments tab end to end, through gradio_client against the app launched in this process.

Each test opens its own client (its own session). Templates are made directly with
the embedded model's shape (30 layers x 1536 neurons, 3 small components) and
uploaded as files; the held-out sets are a few built-in prompts, cut short, with 2
random draws, so that each run takes seconds on the embedded model.
"""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from live_app import EMBEDDED, expect_error, figure, load, picked

from fnweb.experiment_results import ExperimentResult
from fnweb.experiments import MAX_DRAWS
from fnweb.templates import Template, TemplateMeta

pytestmark = pytest.mark.slow

LAYERS, WIDTH = list(range(30)), 1536


def make_template(width: int = WIDTH, model_id: str = EMBEDDED, built_on: int = 10) -> Template:
    """Three disjoint components of 8 neurons per layer; its metadata says it was built on factual prompts."""
    rng = np.random.default_rng(0)
    picks = rng.permutation(width)[:24].reshape(3, 8)
    meta = TemplateMeta(
        model_id=model_id, site="neurons", n_layers=len(LAYERS), width=width, k=3, threshold="percentile",
        threshold_value=99.5, datasets=[{"name": "builtin:factual", "config": None, "split": "train",
                                         "samples": built_on}], samples_per_dataset=built_on, seed=0,
    )
    components = {c: {layer: sorted(int(n) for n in picks[c]) for layer in LAYERS} for c in range(3)}
    return Template(LAYERS, width, components, name="planted", meta=meta)


def upload(client, tmp_path, template: Template, stem: str = "planted") -> str:
    from gradio_client import handle_file

    path = template.save(tmp_path / f"{stem}.json")
    out = client.predict(handle_file(str(path)), api_name="/upload_template")
    return picked(out[-1])[0]


def experiment(client, template, sets=("factual",), files=(), samples=4, draws=2, seed=0, max_tokens=40,
               leave_out=True):
    from gradio_client import handle_file

    return client.predict(template, list(sets), [handle_file(str(f)) for f in files], samples, draws, seed,
                          max_tokens, leave_out, api_name="/experiment")


def downloads(files) -> dict[str, str]:
    """The download list's files by name."""
    paths = [f if isinstance(f, str) else f["path"] for f in files]
    return {p.replace("\\", "/").rsplit("/", 1)[-1]: p for p in paths}


def test_experiment_runs_end_to_end(client, tmp_path):
    load(client)
    name = upload(client, tmp_path, make_template())
    status, reading, lesion, curve, table, curve_table, files, *optional = experiment(client, name)
    assert len(optional) == 5 and not any(part["visible"] for part in optional)  # none asked for: none shown
    # The template was built on 10 factual prompts: they are left out, and the page says how many.
    assert "Done in" in status and "10 of its 94 prompts were used to build the template" in status
    assert reading.startswith("On 4 held-out prompts") and "random neurons (same count per layer" in reading
    bars = figure(lesion)
    assert [t["name"].split(",")[0].split(" (")[0] for t in bars] == ["network lesioned", "random neurons"]
    assert len(bars[0]["x"]) == 4 and len(bars[1]["error_y"]["array"]) == 4  # 3 components + all of them
    lines = figure(curve)
    assert [len(t["x"]) for t in lines] == [3, 3] and "kept" in lines[1]["name"]
    assert [row[0] for row in table["data"]] == ["0", "1", "2", "union"]
    assert [row[0] for row in curve_table["data"]] == [1, 2, 3]
    paths = downloads(files)
    assert sorted(paths) == ["experiment.json", "experiment_components.csv", "experiment_curve.csv"]
    result = ExperimentResult.load(paths["experiment.json"])
    assert not result.partial and result.prompts == 4 and result.settings["draws"] == 2
    assert [r.component for r in result.rows] == ["0", "1", "2"] and result.union is not None
    # The table on the page shows the numbers of the file.
    assert table["data"][0][3] == f"{result.rows[0].network['dce']:+.4f}"
    with open(paths["experiment_components.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["component"] for r in rows] == ["0", "1", "2", "union"]
    assert float(rows[0]["dce"]) == pytest.approx(result.rows[0].network["dce"])


def test_bad_inputs_are_explained(client, tmp_path):
    # A template for another model, uploaded before any model was loaded (so the upload could not check it).
    other = upload(client, tmp_path, make_template(width=64, model_id="tiny-llama"), stem="tiny")
    load(client)
    expect_error("made for another model", experiment, client, other)
    name = upload(client, tmp_path, make_template())
    expect_error("has 3 usable prompts after leaving out the template.s prompts; an experiment needs at least 4",
                 experiment, client, name, samples=3)
    everything = upload(client, tmp_path, make_template(built_on=94), stem="all_factual")  # built on every one
    expect_error("has 2 usable prompts after leaving out the template's prompts",
                 experiment, client, everything, sets=("factual", "creative"), samples=2, draws=1, max_tokens=128)
    expect_error("No held-out prompt set chosen", experiment, client, name, sets=())
    expect_error(f"Random draws must lie between 1 and {MAX_DRAWS}", experiment, client, name, draws=0)


def test_no_template_is_explained(client):
    load(client)
    expect_error("No template yet", experiment, client, None)


def test_overlap_is_warned_and_stop_mid_run_gives_partial_results(client, tmp_path):
    load(client)
    name = upload(client, tmp_path, make_template(built_on=94))  # every factual prompt built the template
    # Kept in (leave out unticked): 15 of the 30 held-out prompts overlap, and the page says so while it runs.
    job = client.submit(name, ["factual", "creative"], [], 15, 2, 0, 128, False, api_name="/experiment")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for the first prompt's numbers to reach the page
        outputs = job.outputs()
        if outputs and outputs[-1][4] and outputs[-1][4].get("data"):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the experiment never showed a first result")
    assert "Lesions and random controls: unit" in outputs[-1][0]
    assert "overlaps the template&#x27;s prompts: 15 of 30 held-out prompts (50 %)" in outputs[-1][0]
    client.predict(api_name="/stop_experiment")
    status, reading, lesion, curve, table, curve_table, files, *_ = job.result()
    assert "PARTIAL RESULT" in status and "Stopped by request" in status
    assert reading.startswith("**Partial result (stopped).**") and "PARTIAL RESULT" in reading
    assert "(partial)" in json.loads(lesion["plot"])["layout"]["title"]["text"]
    result = ExperimentResult.load(downloads(files)["experiment.json"])
    assert result.partial and result.partial_note.startswith("Stopped by request")
    assert 1 <= result.rows[0].prompts < 30 and any("overlaps the template's prompts" in w for w in result.warnings)
    assert all(row[-1] == result.rows[0].prompts for row in table["data"])
