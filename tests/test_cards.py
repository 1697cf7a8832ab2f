"""Component cards on a tiny model with a planted network: one token drives it, one token is what it writes.

In layer 1 of a tiny random Llama, neurons 0-7 read a direction that only the token
" function" carries (its embedding is set to it) and write along the embedding of "K"
(the unembedding is tied to the embeddings). A build must give that network a card
whose strongest contexts sit on " function" and whose direct effect promotes "K";
so must cards made on demand for the same masks without stored cards, and a search.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import tiny
import torch

from fnweb.activity import orient, top_contexts
from fnweb.archs import layout_of, output_head
from fnweb.build import BuildConfig, build_template
from fnweb.cards import Cards, card_text, component_labels, make_label, stored_cards, token_pieces, tokenizer_mismatch
from fnweb.cli.explain import main as explain_main
from fnweb.direct_effect import logit_change, written_direction
from fnweb.errors import FnwebError
from fnweb.experiment_results import ExperimentResult, LesionRow
from fnweb.explain import cards_for, search_text
from fnweb.hubcard import template_card
from fnweb.metrics import Stat
from fnweb.models import LoadedModel, ModelRequest
from fnweb.prompts import PromptSource
from fnweb.templates import Template

SOURCES = [PromptSource("builtin:factual"), PromptSource("builtin:code")]
PLANTED = range(8)  # neurons of layer 1


def planted_model(tokenizer):
    """A tiny Llama whose layer-1 neurons 0-7 fire on ' function' and write the embedding of 'K'."""
    model = tiny.make_model("llama")
    trigger, written = tokenizer(" function")["input_ids"][0], tokenizer("K")["input_ids"][0]
    generator = torch.Generator().manual_seed(1)
    read = torch.randn(tiny.HIDDEN, generator=generator)
    read /= read.norm()
    write = torch.randn(tiny.HIDDEN, generator=generator)
    write -= (write @ read) * read
    write /= write.norm()
    with torch.no_grad():
        model.model.embed_tokens.weight[trigger] = read
        model.model.embed_tokens.weight[written] = write
        mlp = model.model.layers[1].mlp
        mlp.gate_proj.weight[: len(PLANTED)] = 2 * read
        mlp.up_proj.weight[: len(PLANTED)] = 2 * read
        mlp.down_proj.weight[:, : len(PLANTED)] = write[:, None]
    return model, trigger, written


@pytest.fixture(scope="module")
def planted(tokenizer, tmp_path_factory):
    model, trigger, written = planted_model(tokenizer)
    lm = LoadedModel(model, tokenizer, ModelRequest(model_id="tiny-planted"))
    path = tmp_path_factory.mktemp("cards") / "planted.json"
    result = build_template(lm, BuildConfig(SOURCES, samples_per_dataset=12, max_tokens=48, k=3, card_negative=True),
                            output=path)
    template = result.template
    component = next(c for c in template.component_ids if set(template.components[c].get(1, [])) & set(PLANTED))
    return lm, template, path, component, trigger, written


def without_cards(template: Template) -> Template:
    bare = copy.deepcopy(template)
    bare.cards = None
    return bare


def test_the_planted_token_tops_its_components_card(planted):
    lm, template, path, component, trigger, written = planted
    cards = Cards.from_dict(Template.load(path).cards)  # stored in the file, read back
    card = cards.card(component)
    best = card.top[0]
    assert best.ids[best.at] == trigger and best.pieces[best.at] == " function"
    assert best.value > 3 * card.top[1].value and best.value > 3 * abs(card.bottom[0].value)  # it stands out
    assert best.values[best.at] == pytest.approx(best.value, abs=0.01)  # each window token has its own value
    assert card.promotes[0].token == written and card.promotes[0].piece == "K"
    assert card.label.startswith("`function`") and "promotes `K`" in card.label
    assert card.readout.fidelity > 0.9  # its neurons read its ICA source well
    text = card_text(cards, component, next(r for r in template.coverage() if r["component"] == component))
    assert "[[ function]]" in text and "direct effect (ignores later layers)" in text and "stability" in text


def test_cards_round_trip_in_the_fnweb_block_and_the_original_keys_stay(planted):
    _, template, path, *_ = planted
    data = json.loads(path.read_text())
    assert set(data) == {"name", "layout", "templates", "fnweb"}  # what the original reader reads is unchanged
    assert data["fnweb"]["cards"]["version"] == 1
    loaded = Template.load(path)
    assert loaded == template and Cards.from_dict(loaded.cards).to_dict() == loaded.cards
    assert stored_cards(loaded).labels() == component_labels(loaded) and len(component_labels(loaded)) == 3


def test_cards_made_on_demand_find_the_same_token_and_effect(planted):
    lm, template, _, component, trigger, written = planted
    cards, note = cards_for(without_cards(template), lm, sources=SOURCES, samples=12, max_tokens=48)
    assert note == "" and cards.method == "on demand"
    card = cards.card(component)
    assert card.top[0].ids[card.top[0].at] == trigger and card.promotes[0].token == written
    assert card.readout.fidelity is None  # no ICA source to compare with


def test_search_ranks_the_planted_component_first_at_the_token(planted):
    lm, template, _, component, *_ = planted
    result = search_text(lm, template, stored_cards(template), "Write a function that adds two numbers.")
    best, peak, at = result.ranking()[0]
    assert best == component and result.pieces[at] == " function" and peak > 5
    assert "".join(result.pieces) == "Write a function that adds two numbers."


def test_search_refuses_empty_and_too_long_text(planted):
    lm, template, *_ = planted
    cards = stored_cards(template)
    for empty in ("", "   \n"):
        with pytest.raises(FnwebError, match="empty"):
            search_text(lm, template, cards, empty)
    with pytest.raises(FnwebError, match="at most 256"):
        search_text(lm, template, cards, "word " * 400)


def test_cards_of_another_tokenizer_are_refused_and_made_on_demand(planted):
    lm, template, *_ = planted
    other = copy.deepcopy(template)
    for component in other.cards["components"]:
        for context in component["top"]:
            context["ids"] = [(i + 7) % 500 for i in context["ids"]]  # other ids, same text: another tokenizer
    assert "another tokenizer" in tokenizer_mismatch(Cards.from_dict(other.cards), lm.tokenizer)
    cards, note = cards_for(other, lm, sources=SOURCES, samples=4, max_tokens=32)
    assert cards.method == "on demand" and "another tokenizer" in note
    other.cards["vocab"] = 50_000
    assert "50,000 tokens" in tokenizer_mismatch(Cards.from_dict(other.cards), lm.tokenizer)


def test_templates_without_cards_say_what_to_do(planted, tmp_path):
    lm, template, path, *_ = planted
    original = json.loads(path.read_text())
    del original["fnweb"]  # the original tool's file: no fnweb block
    (tmp_path / "original.json").write_text(json.dumps(original))
    bare = Template.load(tmp_path / "original.json")
    with pytest.raises(FnwebError, match="no stored cards.*load a model"):
        cards_for(bare)
    cards, _ = cards_for(bare, lm, sources=SOURCES, samples=4, max_tokens=32)  # the site comes from the width
    assert sorted(cards.components) == bare.component_ids
    broken = copy.deepcopy(template)
    broken.cards["components"][0]["top"][0]["pieces"] = []
    with pytest.raises(FnwebError, match="malformed"):
        Cards.from_dict(broken.cards)
    assert stored_cards(broken) is None and component_labels(broken) == {}
    with pytest.raises(FnwebError, match="malformed.*load a model"):
        cards_for(broken)
    with pytest.raises(FnwebError, match="no card for component 9"):
        stored_cards(template).card(9)


def test_build_without_cards_and_bad_settings(tiny_lm):
    plain = build_template(tiny_lm, BuildConfig(SOURCES, samples_per_dataset=4, max_tokens=24, k=2,
                                                card_contexts=0, stability_runs=0)).template
    assert plain.cards is None and "cards" not in plain.to_dict()["fnweb"]
    with pytest.raises(FnwebError, match="Card contexts"):
        BuildConfig(SOURCES, card_contexts=-1).validate()


def test_contexts_skip_repeats_and_orient_by_the_heavy_tail():
    sequences = [[1, 2, 3, 9], [1, 2, 3, 4], [5, 6, 7, 8]]
    starts = [0, 4, 8]
    column = np.array([0, 0, 5.0, 0, 0, 0, 5.0, 0, 0, 3.0, 0, 0])  # token 3 after 1 2 twice, then token 6
    found = top_contexts(column, sequences, starts, n=5, window=(2, 1))
    assert [(c.prompt, c.position, c.ids, c.at) for c in found][:2] == [(0, 2, [1, 2, 3, 9], 2), (2, 1, [5, 6, 7], 1)]
    assert found[0].values == [0.0, 0.0, 5.0, 0.0]
    assert list(orient(np.stack([column, -column], 1))) == [1.0, -1.0]


def test_labels_name_the_set_that_drives_it(planted):
    _, template, *_ = planted
    card = copy.deepcopy(stored_cards(template).card(0))
    card.sets = [1.2, 0.1]
    assert make_label(card, ["builtin:code", "builtin:factual"]).startswith("code · ")
    card.sets = [0.5, 0.4]  # nothing stands out
    assert " · " not in make_label(card, ["builtin:code", "builtin:factual"])


def test_direct_effect_reads_conv1d_and_mlp_output_channels(tokenizer):
    model = tiny.make_model("gpt2")
    layout = layout_of(model)
    channels, weights = {1: np.array([3, 5])}, {1: np.array([1.0, -2.0])}
    expected = model.transformer.h[1].mlp.c_proj.weight[[3, 5]].T @ torch.tensor([1.0, -2.0])  # Conv1D: (in, out)
    assert torch.allclose(written_direction(model, layout, "neurons", channels, weights), expected, atol=1e-6)
    residual = written_direction(model, layout, "mlp_output", {0: np.array([2]), 2: np.array([2, 4])},
                                 {0: np.array([1.0]), 2: np.array([0.5, 3.0])})
    assert residual[2] == 1.5 and residual[4] == 3.0 and residual.abs().sum() == 4.5
    head = output_head(model)  # GPT-2: a LayerNorm (mean removed, then scaled) and the tied unembedding
    centred = (residual - residual.mean()) * model.transformer.ln_f.weight
    assert torch.allclose(logit_change(head, residual[:, None])[:, 0], model.lm_head.weight @ centred, atol=1e-5)
    model.config.model_type = "unheard_of"
    with pytest.raises(FnwebError, match="does not know where 'unheard_of' keeps its final norm"):
        output_head(model)


def test_token_pieces_rebuild_the_text(tokenizer):
    text = "Écrivez une fonction — vite!"
    ids = tokenizer(text)["input_ids"]
    assert "".join(token_pieces(tokenizer, ids)) == text


def test_hub_card_shows_labels_and_contexts(planted):
    _, template, _, component, *_ = planted
    card = template_card(template, "someone/planted")
    assert "## What the components do" in card and "**function**" in card and "promotes `K`" in card
    assert "What the components do" not in template_card(without_cards(template), "someone/planted")


def test_explain_cli_prints_cards_and_refuses_bad_input(planted, capsys, tmp_path):
    _, template, path, component, *_ = planted
    assert explain_main([str(path), "--top", "2", "--component", str(component)]) == 0
    out = capsys.readouterr().out
    assert f"Component {component}: `function`" in out and out.count("[[") == 2 + 2  # two top, two most negative
    assert explain_main([str(path), "--component", "9"]) == 2
    assert "Component 9 is not in this template" in capsys.readouterr().err
    without_cards(template).save(tmp_path / "bare.json")
    assert explain_main([str(tmp_path / "bare.json")]) == 2
    assert "pass --model" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "fnweb", "explain", str(path), "--top", "1"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.count("Component ") == 3


# ---- the app's card panel, without a model ----------------------------------------------


def test_networks_card_panel_shows_cards_without_the_model(planted, monkeypatch):
    import gradio as gr

    from fnweb.ui import cards_panel, state
    from fnweb.ui.compare_tab import component_choices
    from fnweb.ui.render import lesion_frame as _lesion_frame

    def no_model(*_):
        raise AssertionError("the card panel must not load a model")

    monkeypatch.setattr(cards_panel, "load_model", no_model)
    monkeypatch.setattr(state, "load_model", no_model)
    _, template, _, component, *_ = planted
    session = state.Session()
    entry = session.add(template, "uploaded", "planted")
    html, button = cards_panel.show_card(session, entry.name, str(component))
    assert f'id="fnc-card-{component}"' in html and "fnc-top" in html and 'data-context="' in html
    assert "direct effect (ignores later layers)" in html and button["visible"] is False
    overview, _ = cards_panel.show_card(session, entry.name, "all")
    assert overview.count('data-component="') == 3
    assert "Lesion (your experiment)" not in html

    prompt, chosen, tabs = cards_panel.clicked(session, entry.name, gr.EventData(None, {
        "context": f"{component}:top:0", "component": ""}))[1:]
    assert "function" in prompt and chosen == [component] and tabs.selected == "compare"
    assert cards_panel.clicked(session, entry.name, gr.EventData(None, {"component": "1"}))[0] == "1"
    with pytest.raises(gr.Error, match="did not name a context"):
        cards_panel.clicked(session, entry.name, gr.EventData(None, {"context": f"{component}:top:99"}))

    labels = component_labels(template)
    choices = component_choices(session, entry.name, [])["choices"]
    assert choices[component] == (f"{component} · {labels[component]}", component)

    row = LesionRow(component=str(component), ids=[component], neurons=4, share=0.02, prompts=8,
                    network={"ce": 2.3, "dce": 0.3, "kl": 0.2},
                    random={"dce": Stat(0.01, 0.005), "kl": Stat(0.01, 0.002)},
                    ratio={"dce": 30.0, "kl": 20.0})
    entry.experiment = ExperimentResult(baseline_ce=2.0, rows=[row], union=None, curve=[], settings={}, prompts=8,
                                        tokens=100)
    html, _ = cards_panel.show_card(session, entry.name, str(component))
    assert "Lesion (your experiment)" in html and "30.0x random" in html
    assert _lesion_frame(entry.experiment, labels)["component"][0] == f"{component} · {labels[component]}"

    bare = session.add(without_cards(template), "uploaded", "bare")
    message, button = cards_panel.show_card(session, bare.name, "0")
    assert "no stored cards" in message and button["visible"] is True
