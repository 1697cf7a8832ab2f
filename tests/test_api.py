"""The typed API and the MCP server: the engine's main actions as standalone calls, from gradio_client and MCP.

With gradio_client: build a template from built-in sets, list its components, compare,
and run a small experiment, each call standing alone (the template travels as JSON);
what a call builds is also kept in the client's own session (the page's endpoints then
use it), never in another's; bad input is one clear error. With an MCP client (where the ``mcp`` package is
installed): the tools are listed with their descriptions and one is called.
"""

from __future__ import annotations

import ast
import asyncio

import pytest
from live_app import EMBEDDED, expect_error, load, new_client

from fnweb.ui.api import mcp_available

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builder(url):
    """The client that builds the module's template (its session keeps it)."""
    return new_client(url)


@pytest.fixture(scope="module")
def built(builder):
    return builder.predict(["arithmetic"], 8, 32, 3, 0, EMBEDDED, api_name="/template_from_builtin")


def test_build_list_compare_and_experiment_as_standalone_calls(client, built):
    assert built["fnweb"]["model_id"] == EMBEDDED and len(built["templates"]) == 3
    components = client.predict(built, api_name="/list_components")
    assert [c["component"] for c in components] == [0, 1, 2]
    assert all(c["neurons"] > 0 and c["layers"] > 0 and "label" in c for c in components)

    result = client.predict(built, "What is 12 + 30?", [0], ["baseline", "lesion", "preserve", "random"], 6, 2, 0,
                            EMBEDDED, api_name="/compare_texts")
    names = [c["column"] for c in result["columns"]]
    assert names == ["baseline", "lesion", "preserve", "random", "random-preserve"]
    lesion = result["columns"][1]
    assert lesion["metrics"]["kl"]["mean"] > 0 and "× random" in lesion["vs_random"]
    assert len(result["columns"][3]["other_draws"]) == 1  # the second draw's text

    experiment = client.predict(built, ["factual"], 4, 2, 48, [0], False, 0, EMBEDDED, api_name="/run_experiment")
    assert [str(row["component"]) for row in experiment["rows"]] == ["0"] and experiment["tokens"] > 0


def test_a_built_template_stays_in_the_callers_session_only(url, builder, built):
    load(builder)
    page_compare = dict(prompt="What is 12 + 30?", components=[1], columns=["baseline", "lesion"], max_new_tokens=4,
                        draws=1, api_name="/compare")
    html, metrics, _status = builder.predict(None, **page_compare)  # no template named: the session's selected one
    assert [row[0] for row in metrics["data"]] == ["Baseline", "Lesion"] and html.count('class="fn-card ') == 2
    other = new_client(url)  # another visitor: the template is not theirs
    load(other)
    expect_error("No template yet", other.predict, None, **page_compare)


def test_bad_input_is_one_clear_error(client, built):
    expect_error("Choose built-in sets from", client.predict, ["no-such-set"], api_name="/template_from_builtin")
    expect_error("Component 9 is not in this template", client.predict, built, "Hi", [9], api_name="/compare_texts")
    expect_error("No model folder at '../etc'", client.predict, built, "Hi", [0], None, 4, 1, 0,
                 "../etc", api_name="/compare_texts")


@pytest.mark.skipif(not mcp_available(), reason="the mcp package is not installed (pip install 'mcp>=1.21,<2')")
def test_mcp_lists_the_tools_and_calls_one(url, built):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def session_calls():
        async with streamablehttp_client(f"{url.rstrip('/')}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {tool.name: tool for tool in (await session.list_tools()).tools}
                called = await session.call_tool("list_components", {"template": built})
                return tools, called

    tools, called = asyncio.run(session_calls())
    for name in ("template_from_builtin", "list_components", "compare_texts", "run_experiment"):
        assert name in tools, sorted(tools)
    assert "components" in tools["list_components"].description.lower()
    assert "template" in tools["compare_texts"].inputSchema["properties"]
    text = "".join(part.text for part in called.content if hasattr(part, "text"))
    assert not called.isError
    listed = ast.literal_eval(text)  # Gradio's MCP server gives a tool's value as its text (a Python literal)
    assert [c["component"] for c in listed] == [0, 1, 2]
