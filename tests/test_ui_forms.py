"""The app's forms as named records, its event wiring and its failure messages, without a browser or a model."""

from __future__ import annotations

import inspect
import tempfile

import gradio as gr
import pytest

from fnweb.errors import FnwebError, Stopped

# ---- forms -------------------------------------------------------------------------------


def test_a_form_reads_fills_and_keeps_its_fields_by_name():
    from fnweb.ui.forms import Form

    with gr.Blocks():
        prompt, seed, files = gr.Textbox("hi"), gr.Number(3), gr.File()
    form = Form(prompt=prompt, seed=seed, files=files)
    assert form.names == ["prompt", "seed", "files"] and form.components == [prompt, seed, files]
    assert form.read(["a prompt", 7, None]) == {"prompt": "a prompt", "seed": 7, "files": None}
    with pytest.raises(ValueError):
        form.read(["too", "few"])
    assert form.fill({"seed": 1}) == {seed: 1}  # only the named field changes
    with pytest.raises(KeyError, match="No field temperature in this form"):
        form.fill({"temperature": 0.5})
    assert form.defaults() == {"prompt": "hi", "seed": 3, "files": None}
    with gr.Blocks():
        components, picked = gr.Dropdown(multiselect=True), gr.Dropdown()
    form = Form(prompt=prompt, seed=seed, files=files, components=components, picked=picked)
    record = {"prompt": "x", "seed": 2, "files": ["/tmp/gradio/abc/data.jsonl"], "components": [0, 3],
              "picked": object(), "not_a_field": 1}
    saved = form.portable(record)
    assert saved == {"prompt": "x", "seed": 2, "components": [0, 3]}  # plain JSON, no server paths
    assert form.fill({**saved, "retired_field": 1}, unknown="skip") == {prompt: "x", seed: 2, components: [0, 3]}


def test_a_tab_reads_fields_and_parts_by_name():
    from fnweb.ui.forms import Form, Tab

    with gr.Blocks():
        prompt, button, output = gr.Textbox(), gr.Button(), gr.HTML()
    tab = Tab(Form(prompt=prompt), "output", generate=button, output=output)
    assert tab.prompt is prompt and tab.generate is button and tab.form["prompt"] is prompt
    assert tab.outputs("output", extra=prompt) == {"output": output, "extra": prompt}
    with pytest.raises(AttributeError, match="no field or part called 'nope'"):
        _ = tab.nope  # reading an unknown part must raise, naming it
    # A part named like a field would hide behind it (its outputs would go to the field): refused.
    with pytest.raises(ValueError, match=r"Parts \['prompt'\] share their names with form fields"):
        Tab(Form(prompt=prompt), "output", prompt=output)


# ---- wiring -----------------------------------------------------------------------------


def wired(handler, inputs, outputs):
    """What ``forms.on`` hands to a trigger: (the Gradio function, input components, output components, keywords)."""
    from fnweb.ui.forms import on

    seen = {}
    on(lambda fn, ins, outs, **kw: seen.update(fn=fn, ins=ins, outs=outs, kw=kw), handler, inputs, outputs)
    return seen["fn"], seen["ins"], seen["outs"], seen["kw"]


def test_on_hands_a_form_as_one_dict_and_maps_named_outputs():
    from fnweb.ui.forms import Form

    with gr.Blocks():
        state, prompt, seed, status, columns = gr.State(), gr.Textbox(), gr.Number(), gr.HTML(), gr.HTML()
    form = Form(prompt=prompt, seed=seed)
    calls = []

    def handler(session, form: dict):
        calls.append((session, form))
        yield {"status": "working"}
        yield {"columns": "<p>done</p>", "status": "ok"}

    fn, ins, outs, kw = wired(handler, [state, form], {"columns": columns, "status": status})
    assert ins == [state, prompt, seed] and outs == [columns, status]
    assert kw["show_progress"] == "hidden"  # Gradio draws no status, "error" included, over any output
    assert inspect.isgeneratorfunction(fn)
    assert list(inspect.signature(fn).parameters) == ["session", "prompt", "seed"]  # the API names the fields
    first, last = list(fn("the session", "Hello", 4))
    assert calls == [("the session", {"prompt": "Hello", "seed": 4})]
    assert first[1] == "working" and first[0] == gr.skip()  # a missing output is left unchanged
    assert last == ("<p>done</p>", "ok")


def test_on_keeps_plain_values_and_special_parameters():
    with gr.Blocks():
        box, line = gr.Textbox(), gr.HTML()

    def target(repo: str, oauth: gr.OAuthToken | None):
        return f"{repo} as {oauth}"

    fn, _, outs, _ = wired(target, [box], {"line": line})
    assert fn("alice/x", None) == "alice/x as None" and outs == [line]
    params = inspect.signature(fn).parameters
    assert list(params) == ["repo", "oauth"] and fn.__annotations__["oauth"] == (gr.OAuthToken | None)
    update = gr.update(visible=False)
    fn2, *_ = wired(lambda session: update, [box], {"line": line})
    assert fn2("x") is update  # an update dict is a value, not outputs by name


def test_on_refuses_a_message_part_that_is_not_an_output():
    from fnweb.ui.feedback import action

    with gr.Blocks():
        box, line = gr.Textbox(), gr.HTML()

    @action("status")
    def handler(text):
        return {"line": text}

    with pytest.raises(ValueError, match="reports in 'status', which is not one of its outputs"):
        wired(handler, [box], {"line": line})


# ---- failures ----------------------------------------------------------------------------


def test_a_failure_is_one_message_in_place_a_toast_and_an_invisible_error():
    from fnweb.ui.feedback import action

    @action("progress")
    def build(form):
        yield {"progress": "working"}
        raise FnwebError(f"Dataset file {tempfile.gettempdir()}/gradio/3f2a/notes.jsonl is not UTF-8.")

    shown = []
    with pytest.warns(UserWarning, match="Dataset file notes.jsonl is not UTF-8"):  # the toast, off a page
        with pytest.raises(gr.Error) as caught:
            for update in build({}):
                shown.append(update["progress"])
    assert shown[0] == "working" and "fn-msg-error" in shown[-1]
    assert "Dataset file notes.jsonl is not UTF-8." in shown[-1] and "/gradio/" not in shown[-1]
    error = caught.value
    assert error.message == "Dataset file notes.jsonl is not UTF-8." and error.visible is False


def test_an_unexpected_failure_is_a_short_message_and_a_logged_traceback(caplog):
    from fnweb.ui.feedback import UNEXPECTED, action

    @action()
    def draw(name):
        return {}[name]

    with pytest.warns(UserWarning), pytest.raises(gr.Error) as caught:
        draw("missing")
    assert caught.value.message == UNEXPECTED and "KeyError" not in caught.value.message
    assert "KeyError: 'missing'" in caplog.text  # the traceback is in the server's log


def test_a_stop_through_an_action_is_said_as_stopped_and_still_ends_the_chain():
    from fnweb.ui.feedback import action

    @action("status")
    def ensure():
        raise Stopped()
        yield

    shown = []
    with pytest.raises(gr.Error):
        for update in ensure():
            shown.append(update["status"])
    assert "fn-msg-stopped" in shown[-1] and "Stopped." in shown[-1]


def test_messages_never_show_temp_paths_or_exception_class_names():
    from fnweb.ui.feedback import scrub

    temp = tempfile.gettempdir()
    assert scrub(f"Template file {temp}/gradio/ab12/garbage.json is not valid JSON.") == \
        "Template file garbage.json is not valid JSON."
    assert scrub("garbage.json is a malformed template (JSONDecodeError: Expecting value).") == \
        "garbage.json is a malformed template (Expecting value)."
    assert scrub("Could not read dataset 'x' (OSError: no such file). Check the name.") == \
        "Could not read dataset 'x' (no such file). Check the name."
    assert scrub("bitsandbytes cannot run here (ModuleNotFoundError)") == "bitsandbytes cannot run here"
    assert scrub("Cannot reach the Hugging Face Hub at http://127.0.0.1:9/.") == \
        "Cannot reach the Hugging Face Hub at http://127.0.0.1:9/."  # not a path: left as it is
