"""Side-by-side generation: columns, streaming, numbers and bad input, on a tiny model."""

import pytest
import torch

from fnweb.archs import layout_of
from fnweb.compare import GenerationSettings, compare, compare_stream
from fnweb.errors import FnwebError
from fnweb.masks import MaskSpec, masked
from fnweb.prompts import Pair, encode_pair
from fnweb.templates import Template


@pytest.fixture(scope="module")
def template(tiny_lm):
    layout = layout_of(tiny_lm.model)
    width = layout.width("neurons")
    return Template(layers=[0, 1, 2], width=width,
                    components={0: {0: list(range(0, 20)), 1: list(range(5, 25))}, 1: {2: [1, 2, 3]}})


def test_four_columns_with_numbers(tiny_lm, template):
    settings = GenerationSettings(max_new_tokens=8, random_draws=3)
    result = compare(tiny_lm, "Name a colour.", template, [0], settings=settings)
    assert result.done
    names = [c.name for c in result.columns]
    assert names == ["baseline", "lesion", "preserve", "random", "random-preserve"]
    base, lesion, preserve, random, random_preserve = result.columns
    assert random_preserve.masked_share == preserve.masked_share and random_preserve.draws == 3
    assert len(random.draw_texts) == len(random_preserve.draw_texts) == 2  # every draw's text can be shown
    assert base.metrics["kl"].mean == pytest.approx(0.0, abs=1e-6) and base.metrics["top1"].mean == 1.0
    assert base.masked_share == 0.0 and base.departs_at is None
    assert lesion.masked_share == pytest.approx(40 / (3 * 64))
    assert preserve.masked_share == pytest.approx(1 - 40 / (3 * 64))
    assert random.masked_share == lesion.masked_share
    assert random.draws == 3 and random.metrics["kl"].sd is not None
    assert preserve.metrics["kl"].mean > 0
    assert all(len(c.tokens) >= 1 for c in result.columns)


def test_lesion_column_equals_a_masked_greedy_run(tiny_lm, template):
    result = compare(tiny_lm, "Add two numbers.", template, [0], columns=["baseline", "lesion"],
                     settings=GenerationSettings(max_new_tokens=6))
    prompt_ids = encode_pair(tiny_lm.tokenizer, Pair("Add two numbers."), with_response=False)
    with torch.no_grad(), masked(tiny_lm.model, template, MaskSpec((0,), "lesion")):
        alone = tiny_lm.model.generate(torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False,
                                       pad_token_id=0, eos_token_id=tiny_lm.tokenizer.eos_token_id)
    assert result.columns[1].tokens == alone[0, len(prompt_ids):].tolist()[: len(result.columns[1].tokens)]


def test_streaming_yields_every_step_then_the_numbers(tiny_lm, template):
    states = list(compare_stream(tiny_lm, "Hello", template, [1], settings=GenerationSettings(max_new_tokens=5)))
    assert [s.step for s in states[:-1]] == list(range(1, len(states)))
    assert not any(s.done for s in states[:-1]) and states[-1].done
    assert all(not c.metrics for c in states[0].columns) and states[-1].columns[0].metrics


def test_sampling_is_reseeded_for_every_column(tiny_lm, template):
    settings = GenerationSettings(max_new_tokens=6, greedy=False, temperature=1.0, seed=11)
    a = compare(tiny_lm, "Tell a story.", template, [1], columns=["baseline", "lesion"], settings=settings)
    b = compare(tiny_lm, "Tell a story.", template, [1], columns=["baseline", "lesion"], settings=settings)
    assert [c.tokens for c in a.columns] == [c.tokens for c in b.columns]


def test_departure_is_the_first_differing_token(tiny_lm, template):
    result = compare(tiny_lm, "Hi", template, [0], columns=["baseline", "preserve"],
                     settings=GenerationSettings(max_new_tokens=8))
    base, other = result.columns
    if other.departs_at is not None:
        i = other.departs_at
        assert base.tokens[:i] == other.tokens[:i]
        assert i == len(base.tokens) or i == len(other.tokens) or base.tokens[i] != other.tokens[i]


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt="  "), "prompt is empty"),
    (dict(components=[9]), "Component 9 is not in this template"),
    (dict(components=[]), "at least one component"),
    (dict(template=None), "need a template"),
    (dict(columns=["sideways"]), "Unknown column"),
    (dict(settings=GenerationSettings(max_new_tokens=0)), "Max new tokens"),
    (dict(settings=GenerationSettings(greedy=False, temperature=0)), "Temperature"),
])
def test_bad_input(tiny_lm, template, kwargs, message):
    args = dict(prompt="Hi", template=template, components=[0])
    args.update(kwargs)
    with pytest.raises(FnwebError, match=message):
        compare(tiny_lm, **args)


def test_template_for_another_model_is_refused(tiny_lm):
    wrong = Template(layers=[0, 1], width=100, components={0: {0: [1]}})
    with pytest.raises(FnwebError, match="another model"):
        compare(tiny_lm, "Hi", wrong, [0])
