"""Component cards of a real template on the embedded SmolLM2-135M: stored in the file, read back, shown, printed."""

from __future__ import annotations

import html
import json
import subprocess
import sys

import pytest

from fnweb.build import BuildConfig, build_template
from fnweb.cards import Cards, stored_cards
from fnweb.explain import cards_for
from fnweb.prompts import PromptSource
from fnweb.templates import Template

pytestmark = pytest.mark.slow
SETS = [PromptSource("builtin:factual"), PromptSource("builtin:code"), PromptSource("builtin:arithmetic")]


@pytest.fixture(scope="module")
def built(embedded_lm, tmp_path_factory):
    path = tmp_path_factory.mktemp("cards") / "global_templates.json"
    result = build_template(embedded_lm, BuildConfig(SETS, 15, 64, k=10, stability_runs=0), output=path)
    return result, path


def test_cards_are_stored_compact_and_read_back(built, embedded_lm):
    result, path = built
    data = json.loads(path.read_text())
    assert "cards" in data["fnweb"] and len(data["templates"]) == 10
    without = len(path.read_text()) - len(json.dumps(data["fnweb"]["cards"], ensure_ascii=False,
                                                      separators=(",", ":")))
    assert len(path.read_text()) - without < 300_000  # bounded: a few hundred KB at most
    loaded = Template.load(path)
    assert loaded.cards == result.template.cards
    cards = Cards.from_dict(loaded.cards)
    assert sorted(cards.components) == list(range(10)) and cards.model_id == embedded_lm.model_id
    for card in cards.components.values():
        assert len(card.top) == 20 and card.label and len(card.promotes) == len(card.suppresses) == 10
        assert card.top[0].value >= card.top[-1].value and card.readout.fidelity > 0.8
        # the pieces make up the window's text (less a character cut at its edges)
        assert "".join(card.top[0].pieces) == embedded_lm.tokenizer.decode(card.top[0].ids).strip("\ufffd")
    found, note = cards_for(loaded, embedded_lm)
    assert note == "" and found.to_dict() == loaded.cards  # they fit this model: no need to run it


def test_the_networks_tab_shows_them_without_the_model(built, monkeypatch):
    from fnweb.ui import cards_panel, state

    def no_model(*_):
        raise AssertionError("showing stored cards must not load or run a model")

    monkeypatch.setattr(cards_panel, "load_model", no_model)
    monkeypatch.setattr(state, "load_model", no_model)
    _, path = built
    session = state.Session()
    entry = session.add(Template.load(path), "uploaded", "embedded")
    labels = stored_cards(entry.template).labels()
    for component in entry.template.component_ids:
        page, _ = cards_panel.show_card(session, entry.name, str(component))
        assert f'id="fnc-card-{component}"' in page and page.count('class="fnc-ctx"') == 20
        assert html.escape(labels[component].split("`")[1]) in page


def test_explain_prints_the_stored_cards(built):
    _, path = built
    done = subprocess.run([sys.executable, "-m", "fnweb", "explain", str(path), "--model", "embedded", "--top", "3"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stderr  # the stored cards fit the model: printed as they are
    assert done.stdout.count("Component ") == 10 and done.stdout.count("[[") == 30
    assert "direct effect (ignores later layers): promotes" in done.stdout
