"""The Fine-tune tab end to end, through gradio_client against the app launched in this process.

Runs are tiny (3 steps, batch 2, 64 tokens, one forgetting prompt per set) on the
embedded model, one thread. Each client is a page: its own session; the visitor key
it passes is what a browser keeps in localStorage, so a new client with the same key
is the same visitor after a reload. The first test checks the extra Compare column
in the engine on a tiny model (no app).
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
import time

import numpy as np
import pytest
import torch
from live_app import expect_error, load, new_client, running_app

from fnweb.compare import GenerationSettings, compare, model_column_stream
from fnweb.masks import MaskSpec, masked
from fnweb.templates import Template

ON_THE_FLY = "(computed from the training data)"
FORM = dict(source="built-in", builtin="arithmetic", file=None, hub="", template=ON_THE_FLY, components="0",
            mode="none", control_of="lesion", restrict=False, k=3, ica_samples=8, steps=3, learning_rate=1e-3,
            batch_size=2, grad_accum=1, max_seq_len=64, lora_r=4, lora_alpha=8, lora_dropout=0.0, quantization="none",
            eval_every=1, general_per_set=1, task_examples=4, seed=0)  # in the order of the form's fields


# ---- the extra column, in the engine -------------------------------------------------------


def test_a_model_column_is_generated_and_scored_like_the_batched_columns(tiny_lm):
    template = Template(layers=[0, 1, 2], width=64, components={0: {0: list(range(20)), 1: list(range(5, 25))}})
    settings = GenerationSettings(max_new_tokens=6)
    done = compare(tiny_lm, "Name a colour.", template, [0], ["baseline", "lesion"], settings)
    base, lesion = done.columns

    same = list(model_column_stream(tiny_lm, done, tiny_lm, "run", "same model", settings))
    assert [s.step for s in same[:-1]] == list(range(1, len(same)))  # streamed token by token
    column = same[-1].columns[-1]
    assert same[-1].done and [c.name for c in same[-1].columns] == ["baseline", "lesion", "run"]
    assert column.tokens == base.tokens and column.departs_at is None
    assert column.metrics["kl"].mean == pytest.approx(0.0, abs=1e-6) and column.metrics["top1"].mean == 1.0

    spec = MaskSpec((0,), "lesion")
    *_, last = model_column_stream(tiny_lm, done, tiny_lm, "run", "lesioned", settings,
                                   context=lambda: masked(tiny_lm.model, template, spec))
    column = last.columns[-1]
    assert column.tokens == lesion.tokens and column.departs_at == lesion.departs_at
    for key in ("kl", "ce", "top1"):
        assert column.metrics[key].mean == pytest.approx(lesion.metrics[key].mean, abs=1e-4)


# ---- the app ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def url(runs_dir):
    saved = {k: os.environ.get(k) for k in ("FNWEB_RUNS_DIR", "FNWEB_TORCH_THREADS")}
    os.environ["FNWEB_RUNS_DIR"], os.environ["FNWEB_TORCH_THREADS"] = str(runs_dir), "1"
    threads = torch.get_num_threads()
    try:
        with running_app() as address:
            yield address
    finally:
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start(client, key=None, name="", **changes):
    form = {**FORM, **changes}
    return client.predict(key, *form.values(), name, api_name="/finetune_start")


def poll(client, key, run=None):
    return client.predict(key, run, api_name="/finetune_poll")


def value(output):
    """None for an output the handler left unchanged (gr.skip)."""
    return None if isinstance(output, dict) and output.get("__type__") == "update" and "value" not in output \
        else output


def traces(plot) -> list[dict]:
    """A gr.Plot's Plotly traces, with typed arrays decoded."""
    return [{k: _array(v) for k, v in t.items()} for t in json.loads(plot["plot"])["data"]]


def _array(v):
    if not (isinstance(v, dict) and "bdata" in v):
        return v
    return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()


def follow(client, key, run, until=None, timeout=150):
    """Poll as the page's timer does until the run has ended (or ``until(outputs)``); what was seen."""
    seen = {"progress": [], "charts": [], "last": None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = poll(client, key, run)
        seen["progress"].append(out[2])
        if value(out[3]) is not None:
            seen["charts"].append(traces(out[3]))
        seen["last"] = out
        if (until and until(out)) or not out[6]["active"]:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"the run did not end: {seen['progress'][-1]}")


def train_steps(chart) -> list:
    return next((t["x"] for t in chart if t.get("name") == "train loss"), [])


@pytest.fixture(scope="module")
def finished(url):
    """A lesion run with its mask computed from the training prompts, followed to the end."""
    client = new_client(url)
    load(client)
    out = start(client, mode="lesion", components="1")
    key, picker = out[0], out[1]
    run = picker["value"]
    assert out[6]["active"] and [c[1] for c in picker["choices"]] == [run]
    return key, run, follow(client, key, run)


@pytest.mark.slow
def test_a_run_streams_from_step_1_and_ends_with_learning_and_forgetting(finished, runs_dir):
    from fnweb.ui.finetune_runs import visitor_folder

    key, run, seen = finished
    folder = visitor_folder(key) / run
    assert folder.parent.parent == runs_dir and key not in str(folder)  # the folder does not give the key away
    stepped = [c for c in seen["charts"] if train_steps(c)]
    assert train_steps(stepped[0])[0] == 1 and train_steps(stepped[-1]) == [1, 2, 3]
    assert any("Step 1 of 3" in p or "Step 2 of 3" in p for p in seen["progress"])  # the bar while it trained
    assert any("left" in p for p in seen["progress"] if "Step" in p)
    evals = next(t for t in stepped[-1] if t["name"].startswith("eval"))
    assert evals["x"] == [1, 2, 3] and all(np.isfinite(evals["y"]))

    _, picker, progress, _, table, scatter, timer = seen["last"]
    assert not timer["active"] and "Finished 3 steps" in progress and "task loss" in progress
    summary = json.loads((folder / "summary.json").read_text())
    before, after = summary["learning"]["task_loss_before"], summary["learning"]["task_loss_after"]
    kl = summary["forgetting"]["kl_after"]
    assert summary["mask_mode"] == "lesion" and (folder / "adapter_model.safetensors").exists()
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["run"] == run and row["state"] == "finished" and row["steps"] == "3/3"
    assert row["mask"] == "lesion 1 · on the fly"
    drop, percent = row["learning (loss drop)"].split(" (")
    assert float(drop) == pytest.approx(before - after, abs=1e-4)
    assert percent == f"{100 * (before - after) / before:.0f} %)"
    assert float(row["forgetting (KL from base)"]) == pytest.approx(kl, abs=1e-4) and kl > 0
    point = traces(scatter)[0]
    assert point["name"] == "lesion" and point["text"] == [run]
    assert point["x"] == pytest.approx([kl]) and point["y"] == pytest.approx([100 * (before - after) / before])


@pytest.mark.slow
def test_a_new_page_with_the_visitor_key_reattaches_and_others_see_nothing(finished, url):
    key, run, _ = finished
    again = new_client(url)  # a reload: a new session, the key from the browser
    key_out, picker, progress, chart, table, scatter, timer = poll(again, key)
    assert value(key_out) is None  # the browser already has it
    assert picker["value"] == run and [c[1] for c in picker["choices"]] == [run]
    assert "Finished 3 steps" in progress and not timer["active"]
    assert train_steps(traces(chart)) == [1, 2, 3] and [r[0] for r in table["data"]] == [run]

    stranger = new_client(url)
    key_out, picker, progress, *_ = poll(stranger, None)
    assert isinstance(key_out, str) and key_out != key  # a new visitor gets a key of their own
    assert picker["choices"] == [] and "No runs yet" in progress
    load(stranger)
    expect_error("not one of your fine-tuning runs", compare_run, stranger, run)


def compare_run(client, run, prompt="What is 12 + 30?", tokens=6, columns=("baseline",)):
    return client.predict(None, prompt, [], list(columns), tokens, "greedy", 0.8, 0, 3, run,
                          api_name="/compare")[:2]  # the columns and the metrics (the status line is third)


@pytest.mark.slow
def test_a_fine_tuned_run_is_a_compare_column_with_its_mask(finished, url, embedded_lm):
    from fnweb.finetune import load_run
    from fnweb.prompts import Pair, encode_pair
    from fnweb.ui.finetune_runs import visitor_folder

    key, run, _ = finished
    client = new_client(url)
    load(client)
    poll(client, key)  # the page attaches to the visitor's runs
    page, metrics = compare_run(client, run)
    assert page.count('class="fn-card ') == 2 and "fn-col-run" in page
    rows = {r[0]: dict(zip(metrics["headers"], r)) for r in metrics["data"]}
    assert list(rows) == ["Baseline", "Fine-tuned run"]
    assert "lesion components 1" in rows["Fine-tuned run"]["masked"]
    assert float(rows["Fine-tuned run"]["KL from baseline"]) > 0

    # The same text as the run generates alone, with its mask re-applied.
    loaded = load_run(visitor_folder(key) / run, embedded_lm)
    ids = torch.tensor([encode_pair(embedded_lm.tokenizer, Pair("What is 12 + 30?"), with_response=False)])
    with torch.no_grad(), loaded.masked():
        out = loaded.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    text = embedded_lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert html.escape(text, quote=True) in page.split("fn-col-run")[1]
    expect_error("not one of your fine-tuning runs", compare_run, client, "../../elsewhere")


@pytest.mark.slow
def test_stop_and_save_and_stop_before_the_first_step(url, finished):
    client = new_client(url)
    load(client)
    out = start(client, steps=500, eval_every=0)
    key, run = out[0], out[1]["value"]
    expect_error("Your run .* is still running", start, client, key)
    other = new_client(url)
    load(other)
    expect_error("another visitor's is running", start, other, finished[0])
    follow(client, key, run, until=lambda o: value(o[3]) is not None and train_steps(traces(o[3])))
    message = client.predict(run, api_name="/finetune_stop")
    assert "Stopping" in message and "saves the adapter" in message
    _, _, progress, _, table, *_ = follow(client, key, run)["last"]
    assert "Stopped at step" in progress and "the adapter as of step" in progress and "task loss" in progress
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["state"] == "stopped" and row["learning (loss drop)"] != "—"

    out = start(client, key, steps=500, eval_every=0)
    early = out[1]["value"]
    message = client.predict(early, api_name="/finetune_stop")
    assert "before its first step" in message
    progress = follow(client, key, early)["last"][2]
    from fnweb.ui.finetune_runs import visitor_folder

    adapter = (visitor_folder(key) / early / "adapter_model.safetensors").exists()
    assert ("Stopped at step 1 of 500" in progress and adapter) or \
        ("Stopped before the first step: no adapter was saved" in progress and not adapter)
    assert value(client.predict(early, api_name="/finetune_stop")) is None  # nothing to stop: only a note


@pytest.mark.slow
def test_bad_input_is_said_in_the_page(url, finished, tmp_path, tiny_model_dir, monkeypatch):
    from ftkit import planted_template
    from gradio_client import handle_file

    client = new_client(url)
    expect_error("No model loaded", start, client)
    load(client)
    expect_error("Learning rate must be above 0", start, client, learning_rate=-1)
    expect_error(r"Steps must lie between 1 and 5000 \(got 0\)", start, client, steps=0)
    expect_error(r"Batch size must lie between 1 and 64 \(got 100\)", start, client, batch_size=100)
    expect_error("Restricted updates need a mask", start, client, restrict=True)
    expect_error("Component 7 is not among the 3 components computed", start, client, mode="lesion",
                 components="7")
    expect_error("No dataset file chosen", start, client, source="file")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("a,b\n1,2\n3,4\n")
    expect_error("No text field found; the fields seen were: a, b", start, client, source="file",
                 file=handle_file(str(numbers)))
    expect_error("Run name '../x' may use only", start, client, name="../x")
    key, run, _ = finished
    expect_error(f"You already have a run called '{run}'", start, client, key, name=run)
    with monkeypatch.context() as patch:  # as on a machine where bitsandbytes cannot run
        patch.setitem(sys.modules, "bitsandbytes", None)
        patch.setitem(sys.modules, "bitsandbytes.functional", None)
        expect_error("4bit training needs bitsandbytes, which cannot run here", start, client, quantization="4bit")

    # A template of another model; component ids that are not in a template.
    load(client, str(tiny_model_dir))
    from fnweb.models import load_model

    planted = planted_template(load_model(str(tiny_model_dir)).model).save(tmp_path / "tiny.json")
    *_, picker = client.predict(handle_file(str(planted)), api_name="/upload_template")
    tiny = picker["value"]
    expect_error("Component 9 is not in this template", start, client, template=tiny, mode="preserve",
                 components="9")
    load(client)
    expect_error("it was made for another model", start, client, template=tiny, mode="preserve", components="0")

    # Out of memory during a step: the run fails with what to lower, and the page says it.
    import fnweb.finetune.train as train

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "_step", no_memory)
    out = start(client)
    progress = follow(client, out[0], out[1]["value"])["last"][2]
    assert "failed: Out of memory at step 1 (batch size 2, max sequence length 64, LoRA r 4)" in progress
    assert "Lower the batch size" in progress and "fn-msg-error" in progress
