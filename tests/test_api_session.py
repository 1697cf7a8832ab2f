"""The typed API keeps what it makes where the page keeps it: in the caller's session, and in its browser's store.

In-process calls on a tiny model (the gradio_client calls are in tests/test_api.py): a
template built, a comparison and an experiment made through the API land in a session
whose page sent its browser key, and come back in a new session with that key (a reload);
another browser sees none of it; a call of the MCP server keeps nothing.
"""

from __future__ import annotations

import gradio as gr
import pytest

from fnweb.ui import api
from fnweb.ui.saved import restore
from fnweb.ui.state import Session

KEY = "a" * 32


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("FNWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FNWEB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def page_session() -> Session:
    """A session whose page has sent its browser key (as the page's load does)."""
    session = Session()
    restore(session, KEY)
    return session


def test_api_calls_land_in_the_session_and_come_back_after_a_reload(folders, tiny_model_dir):
    model = str(tiny_model_dir)
    session = page_session()
    built = api.template_from_builtin(session, ["arithmetic"], 6, 16, 2, 0, model)
    [name] = session.names()
    assert session.selected == name and session.get(name).template.to_dict() == built
    assert session.get(name).saved_id is not None  # kept for the browser

    result = api.compare_texts(session, built, "What is 12 + 30?", [0], ["baseline", "lesion"], 4, 1, 0, model)
    assert [c["column"] for c in result["columns"]] == ["baseline", "lesion"]
    kept = session.last_comparison
    assert kept["setup"]["template"] == {"name": name, "ref": f"saved:{session.get(name).saved_id}"}
    experiment = api.run_experiment(session, built, ["factual"], 4, 1, 64, [0], False, 0, model)
    assert session.get(name).experiment.to_dict() == experiment  # the cards show it

    reloaded = Session()
    out = restore(reloaded, KEY)
    assert reloaded.names() == [name] and reloaded.get(name).template.to_dict() == built
    assert out["compare.prompt"] == "What is 12 + 30?" and out["compare.columns"] == ["baseline", "lesion"]
    assert reloaded.get(name).experiment.to_dict() == experiment
    assert "1 template, 1 comparison, 1 experiment" in out["summary"]

    stranger = Session()
    restore(stranger, "b" * 32)
    assert stranger.names() == [] and stranger.last_comparison is None  # nothing is shared between browsers


def test_without_a_browser_the_session_keeps_it_and_the_mcp_server_keeps_nothing(folders, tiny_model_dir):
    model = str(tiny_model_dir)
    client = Session()  # a gradio_client Client: a session, no browser store
    built = api.template_from_builtin(client, ["arithmetic"], 6, 16, 2, 0, model)
    assert len(client.names()) == 1 and client.get(None).saved_id is None
    api.compare_texts(client, built, "Hi", [0], ["baseline", "lesion"], 3, 1, 0, model)
    assert client.last_comparison["setup"]["prompt"] == "Hi"

    shared = page_session()  # the MCP server's one client: every agent's calls would meet here
    mcp = gr.Request(headers=dict([api.MCP_CALLER]))
    api.template_from_builtin(shared, ["arithmetic"], 6, 16, 2, 0, model, mcp)
    api.compare_texts(shared, built, "Hi", [0], ["baseline"], 3, 1, 0, model, mcp)
    assert shared.names() == [] and shared.last_comparison is None
    assert shared.store.counts() == {"templates": 0, "comparisons": 0, "experiments": 0}
