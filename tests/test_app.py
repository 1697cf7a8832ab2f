"""The web app end to end, through gradio_client against the app launched in this process.

Each test opens its own client, so it has its own session (as a new browser tab
would). The embedded model does the work; builds are small (10-20 samples, k 2-5)
and generations short so that the whole file stays within a couple of minutes.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from live_app import EMBEDDED, expect_error, figure, load, picked

pytestmark = pytest.mark.slow

ALL_COLUMNS = ["baseline", "lesion", "preserve", "random"]


def build(client, sets=("factual",), samples=20, max_tokens=64, k=5, files=(), hub="", threshold=98.0, seed=0):
    from gradio_client import handle_file

    return client.predict(list(sets), hub, [handle_file(str(f)) for f in files], samples, max_tokens, k,
                          "neurons", "percentile", threshold, seed, api_name="/build_template")


def compare(client, template, prompt="What is the capital of France?", components=(0,), columns=ALL_COLUMNS,
            tokens=8, decoding="greedy", temperature=0.8, draws=3):
    html, metrics, _status = client.predict(template, prompt, list(components), list(columns), tokens, decoding,
                                            temperature, 0, draws, api_name="/compare")
    return html, metrics


# ---- the main path ------------------------------------------------------------------


def test_load_build_networks_compare(client):
    status = load(client)
    assert "30 layers x 1,536 neurons" in status and "error" not in status

    message, summary, coverage, download, picker = build(client, k=5)
    assert "Built" in message
    name, names = picked(picker)
    assert names == [name]
    assert [row[0] for row in coverage["data"]] == [0, 1, 2, 3, 4]
    assert coverage["headers"][:2] == ["component", "neurons"]
    assert all(row[1] > 0 for row in coverage["data"])
    saved = json.loads(open(download, encoding="utf-8").read())
    assert saved["fnweb"]["k"] == 5 and saved["fnweb"]["model_id"] == EMBEDDED
    assert sorted(saved["templates"]) == ["0", "1", "2", "3", "4"]

    component_choices, note, heatmap, bars, overlap = client.predict(name, "all", 256, api_name="/draw_networks")
    trace = figure(heatmap)[0]
    assert trace["type"] == "heatmap"
    assert len(trace["y"]) == 30 and len(trace["x"]) == 256  # 30 layers, 1536 neurons in 256 bins of 6
    assert np.shape(trace["z"]) == (30, 256) and "neurons" in trace["hovertemplate"]
    assert np.shape(figure(overlap)[0]["z"]) == (5, 5)
    assert len([t for t in figure(bars) if t["type"] == "bar"]) == 5
    assert [c[1] for c in component_choices["choices"]] == ["all", "0", "1", "2", "3", "4"]
    one = figure(client.predict(name, "3", 64, api_name="/draw_networks")[2])[0]
    assert len(one["x"]) == 64  # 64 bins of 24 neurons: the counts add up to the component's size
    assert np.nansum(np.asarray(one["z"], dtype=float)) == sum(len(v) for v in saved["templates"]["3"].values())

    html, metrics = compare(client, name, components=[0, 1], tokens=8)
    assert html.count('class="fn-card ') == 5
    assert html.count('<details class="fn-draw">') == 4  # every other draw of both controls can be opened
    rows = {row[0]: row for row in metrics["data"]}
    assert list(rows) == ["Baseline", "Lesion", "Preserve", "Random control (3 draws)",
                          "Random control (preserve) (3 draws)"]
    verdicts = metrics["headers"].index("vs random")
    assert "× random" in rows["Lesion"][verdicts] and "× random" in rows["Preserve"][verdicts]
    assert rows["Baseline"][verdicts] == "" and html.count('class="fn-verdict ') == 2
    header = metrics["headers"]
    kl, top1 = header.index("KL from baseline"), header.index("top-1 agreement")
    assert float(rows["Baseline"][kl]) == 0.0 and rows["Baseline"][top1] == "100.0 %"
    assert float(rows["Preserve"][kl]) > float(rows["Lesion"][kl])  # zeroing ~96 % of neurons changes more
    assert "±" in rows["Random control (3 draws)"][kl]
    share = header.index("share masked")
    assert rows["Lesion"][share] == rows["Random control (3 draws)"][share]  # the control is matched in size


def test_upload_template_then_compare_baseline_only(client, tmp_path, embedded_lm):
    from fnweb.build import BuildConfig, build_template
    from fnweb.prompts import PromptSource

    load(client)
    result = build_template(embedded_lm, BuildConfig([PromptSource("builtin:arithmetic")], 10, 32, k=3))
    path = result.template.save(tmp_path / "arith.json")
    from gradio_client import handle_file

    message, summary, coverage, download, picker = client.predict(handle_file(str(path)), api_name="/upload_template")
    assert "Using the uploaded template" in message
    name, names = picked(picker)
    assert name.startswith("arith") and names == [name]
    assert len(coverage["data"]) == 3
    html, metrics = compare(client, name, prompt="What is 2 + 2?", columns=["baseline"], tokens=4)
    assert html.count('class="fn-card ') == 1 and [r[0] for r in metrics["data"]] == ["Baseline"]


# ---- bad input ----------------------------------------------------------------------


def test_no_model_loaded(client):
    expect_error("No model loaded", build, client, samples=5, k=2)
    expect_error("No model loaded", compare, client, None, columns=["baseline"])


def test_unknown_model_ids(client):
    expect_error("Could not load model 'no-such-org/no-such-model'", load, client, "no-such-org/no-such-model")
    expect_error("No model folder", load, client, "/no/such/folder")
    assert "30 layers" in load(client)  # and the app still works


def test_bad_build_inputs(client, tmp_path):
    load(client)
    expect_error("No prompt sources chosen", build, client, sets=())
    expect_error("k must lie between 1 and 512", build, client, k=1000)
    expect_error("Max tokens per sample must lie between", build, client, max_tokens=1)
    expect_error("Samples per dataset must lie between", build, client, samples=0)
    expect_error("Hub datasets, line 1", build, client, sets=(), hub="a, b, c, d")
    not_a_dataset = tmp_path / "notes.txt"
    not_a_dataset.write_text("just some words\n")
    # Gradio itself refuses a file type the field does not take, and says which types it takes.
    expect_error(r"Invalid file type.*\.jsonl", build, client, sets=(), files=[not_a_dataset])
    no_text = tmp_path / "numbers.csv"
    no_text.write_text("a,b\n1,2\n")
    expect_error("No text field found; the fields seen were: a, b", build, client, sets=(), files=[no_text])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "hi"}\n{not json\n')
    expect_error("line 2 is not valid JSON", build, client, sets=(), files=[broken])
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    expect_error("Dataset file binary.jsonl looks like a binary file, not text", build, client, sets=(),
                 files=[binary])
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("prompt,response\nUn café ?,Oui.\n".encode("latin-1"))
    expect_error(r"Dataset file latin1.csv is not UTF-8 \(byte 0xE9 on line 2\); save it as UTF-8", build, client,
                 sets=(), files=[latin1])


def test_bad_template_uploads(client, tmp_path):
    from gradio_client import handle_file

    from fnweb.templates import Template, TemplateMeta

    load(client)
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps([{"prompt": "hi", "response": "hello"}]))
    expect_error("is not an fnweb template", client.predict, handle_file(str(dataset)), api_name="/upload_template")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{ this is not json")
    expect_error("is not valid JSON", client.predict, handle_file(str(garbage)), api_name="/upload_template")
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    expect_error("Template file binary.json looks like a binary file", client.predict, handle_file(str(binary)),
                 api_name="/upload_template")
    meta = TemplateMeta(model_id="tiny-llama", site="neurons", n_layers=3, width=64, k=2, threshold="percentile",
                        threshold_value=98.0)
    other = Template.from_masks(np.eye(3 * 64, 2, dtype=np.uint8), [0, 1, 2], 64, meta).save(tmp_path / "tiny.json")
    expect_error("made for another model", client.predict, handle_file(str(other)), api_name="/upload_template")


def test_bad_compare_inputs(client):
    load(client)
    *_, picker = build(client, samples=10, max_tokens=32, k=3)
    name, _ = picked(picker)
    expect_error("Component 42 is not in this template", compare, client, name, components=[42])
    expect_error("The prompt is empty", compare, client, name, prompt="   ")
    expect_error("Max new tokens must lie between 1 and 1024", compare, client, name, tokens=5000)
    expect_error("Temperature must lie between", compare, client, name, decoding="sampled", temperature=9.0)
    expect_error("Choose at least one component", compare, client, name, components=[])
    expect_error("No template called 'nope'", compare, client, "nope")
    expect_error("No columns chosen", compare, client, name, columns=[])
    html, _ = compare(client, name, tokens=2)  # still works afterwards
    assert html.count('class="fn-card ') == 5  # baseline, lesion, preserve and a random control for each


def test_stop_mid_build_leaves_nothing(client):
    load(client)
    job = client.submit(["factual", "code"], "", [], 100, 128, 5, "neurons", "percentile", 98.0, 0,
                        api_name="/build_template")
    deadline = time.monotonic() + 60
    while "Capturing" not in str(job.outputs()[-1:]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Capturing" in str(job.outputs()[-1:]), "the build never reported its capture"
    pressed = time.monotonic()
    client.predict(api_name="/stop")
    message, *_, picker = job.result(timeout=60)
    assert "Stopped. Nothing was saved" in message
    assert time.monotonic() - pressed < 30
    assert not isinstance(picker, dict) or "value" not in picker  # the picker was not touched
    *_, picker = build(client, samples=5, max_tokens=32, k=2)  # usable at once; only this template exists
    assert len(picked(picker)[1]) == 1


def test_two_clients_at_once_get_their_own_results(url, embedded_lm):
    from gradio_client import Client

    from fnweb.build import BuildConfig, build_template
    from fnweb.prompts import PromptSource
    from fnweb.templates import Template

    first, second = Client(url, verbose=False), Client(url, verbose=False)
    load(first), load(second)
    results = {}

    def run(key, client, sets, k, prompt):
        *_, coverage, download, picker = build(client, sets=sets, samples=10, max_tokens=32, k=k)
        name, names = picked(picker)
        html, metrics = compare(client, name, prompt=prompt, components=[0], tokens=6)
        results[key] = (coverage, name, names, html, metrics, Template.load(download))

    threads = [threading.Thread(target=run, args=("a", first, ("factual",), 4, "Name a red fruit.")),
               threading.Thread(target=run, args=("b", second, ("arithmetic",), 3, "What is 7 + 5?"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert set(results) == {"a", "b"}
    (cov_a, name_a, names_a, html_a, met_a, t_a), (cov_b, name_b, names_b, html_b, met_b, t_b) = \
        results["a"], results["b"]
    assert len(cov_a["data"]) == 4 and len(cov_b["data"]) == 3
    assert names_a == [name_a] and names_b == [name_b]  # neither sees the other's template
    assert name_a.startswith("factual") and name_b.startswith("arithmetic")
    assert "Name a red fruit." in html_a and "7 + 5" not in html_a
    assert "What is 7 + 5?" in html_b and "red fruit" not in html_b
    assert len(met_a["data"]) == len(met_b["data"]) == 5  # a random control for lesion and for preserve
    # Correct, not only distinct: each equals the template the engine builds alone from the same settings
    # (had the two jobs' hooks met on the shared model, the captures would differ).
    for template, sets, k in ((t_a, "factual", 4), (t_b, "arithmetic", 3)):
        alone = build_template(embedded_lm, BuildConfig([PromptSource(f"builtin:{sets}")], 10, 32, k=k)).template
        assert template.components == alone.components
