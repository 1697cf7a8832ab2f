"""What a name in a model, dataset or repo field stands for, answered in one place (fnweb.ids)."""

from __future__ import annotations

import pytest

from fnweb import ids
from fnweb.errors import FnwebError


@pytest.mark.parametrize("name, local, hub_model", [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", False, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    (ids.EMBEDDED_ID, False, ids.EMBEDDED_HUB_ID),
    ("gpt2", False, None),  # a Hub id without a namespace: not a card's base_model
    ("/models/llama", True, None),
    ("./llama", True, None),
    ("~/llama", True, None),
    ("a/b/c", True, None),
    ("a..b/c", True, None),
    ("\\\\server\\share", True, None),
    ("bad name/x", False, None),  # not a path, and not a valid Hub id either
])
def test_model_ids_are_told_apart(name, local, hub_model):
    assert ids.is_local(name) is local
    assert ids.hub_model_id(name) == hub_model


def test_an_existing_folder_is_local_even_when_it_looks_like_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert ids.is_local("org/model") and ids.hub_model_id("org/model") is None


def test_the_embedded_model_and_the_built_in_sets_are_named_once():
    assert ids.model_alias("embedded") == ids.model_alias(ids.EMBEDDED_ID) == ids.EMBEDDED_ID
    assert ids.model_alias("org/m") == "org/m" and ids.hub_base_id(ids.EMBEDDED_ID) == ids.EMBEDDED_HUB_ID
    assert ids.model_short_name(ids.EMBEDDED_ID) == "SmolLM2-135M-Instruct" and ids.model_short_name("o/m") == "m"
    assert ids.is_builtin("builtin:code") and ids.builtin_name("builtin:code") == "code"
    assert [ids.short_name(n) for n in ("builtin:code", "data/my.jsonl", "org/set")] == ["code", "my", "set"]
    assert [ids.is_hub_dataset(n) for n in ("builtin:code", "my.csv", "org/set", "")] == [False, False, True, False]


def test_repo_ids_are_checked_without_the_network():
    assert ids.check_repo_id(" https://huggingface.co/alice/run/ ") == "alice/run"
    for bad in ("", "a--b", "-x"):
        with pytest.raises(FnwebError):
            ids.check_repo_id(bad)
