"""Streaming that scales: lazy decoding in the engine, partial scoring after a Stop, redraws throttled by size.

Measured at the function level (no browser): how many decodes a streamed comparison costs,
what a Stop yields and scores, and how many bytes the Compare handler sends per second
of a 1,024-token, 6-column generation.
"""

from __future__ import annotations

import pytest

from fnweb.archs import layout_of
from fnweb.compare import ColumnResult, Comparison, GenerationSettings, compare_stream
from fnweb.models import LoadedModel
from fnweb.progress import StopFlag
from fnweb.templates import Template
from fnweb.ui import compare_tab, redraw, render, runner


@pytest.fixture(scope="module")
def template(tiny_lm):
    width = layout_of(tiny_lm.model).width("neurons")
    return Template(layers=[0, 1, 2], width=width, components={0: {0: list(range(0, 20)), 1: list(range(5, 25))}})


class CountingTokenizer:
    """The tiny tokenizer, counting its decodes."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decodes = tokenizer, 0

    def decode(self, *args, **kwargs):
        self.decodes += 1
        return self.tokenizer.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def no_eos(lm: LoadedModel) -> LoadedModel:
    """The tiny model with a counting tokenizer that never ends an answer early (its eos is out of reach)."""
    counting = CountingTokenizer(lm.tokenizer)
    lm = LoadedModel(lm.model, counting, lm.request)
    counting.eos_token_id = -1
    return lm


def test_streamed_steps_decode_only_when_read(tiny_lm, template):
    lm = no_eos(tiny_lm)
    states = list(compare_stream(lm, "Hello", template, [0], settings=GenerationSettings(max_new_tokens=24)))
    assert len(states) == 25 and [s.step for s in states[:-1]] == list(range(1, 25))
    final_decodes = lm.tokenizer.decodes  # the done comparison: 3 decodes (text, prefix, rest) per column,
    draws = sum(len(c.draw_texts) for c in states[-1].columns)  # and one per random draw kept for viewing
    assert final_decodes == 3 * len(states[-1].columns) + draws
    assert states[10].columns[1].tokens == states[-1].columns[1].tokens[:11]  # read later, it is still step 11's
    assert lm.tokenizer.decodes == final_decodes + 3 * len(states[10].columns) + draws


def test_a_stop_shows_the_columns_at_once_then_scores_them(tiny_lm, template):
    stop = StopFlag()
    states = []
    for state in compare_stream(no_eos(tiny_lm), "Hello", template, [0], settings=GenerationSettings(
            max_new_tokens=200, random_draws=2), stop=stop):
        states.append(state)
        if state.step == 5 and not state.stopped:
            stop.set()
    *streamed, shown, scored = states
    assert [s.step for s in streamed] == [1, 2, 3, 4, 5]
    assert shown.stopped and not shown.done and not shown.columns[1].metrics  # at once, before the scoring pass
    assert scored.stopped and scored.done and scored.step == 5
    assert all(c.scored == 5 and c.metrics["kl"].mean is not None for c in scored.columns)  # numbers after a Stop
    assert scored.columns[0].metrics["kl"].mean == pytest.approx(0.0, abs=1e-6)


# ---- the Compare handler: bytes sent while 1,024 tokens stream into 6 columns ------------------------------------


def comparison(tokens: int, done=False, stopped=False) -> Comparison:
    text = "word " * tokens
    names = ["baseline", "lesion", "preserve", "random", "run", "lesion"]
    return Comparison("Tell me a long story.", [ColumnResult(n, "components 1, 2", text, list(range(tokens)), 0.02,
                                                             prefix=text[:40], rest=text[40:]) for n in names],
                      done=done, step=tokens, stopped=stopped)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def drive(monkeypatch, views, clock) -> list[tuple[float, dict]]:
    """Run the Compare handler over the given job views (a fake runner); (time, outputs) of each yield."""
    monkeypatch.setattr(compare_tab, "plan_from_form", lambda session, form: compare_tab.ComparePlan(
        "p", None, [], ["baseline"], GenerationSettings()))
    monkeypatch.setattr(compare_tab.runner, "run", lambda *args, **kwargs: iter(views))
    monkeypatch.setattr(compare_tab, "Redraws", lambda: redraw.Redraws(clock=clock))
    monkeypatch.setattr(compare_tab.links, "remember", lambda *args: None)  # no visitor's store here
    sent = []
    for out in compare_tab.compare.__wrapped__(None, {}):
        sent.append((clock.now, out))
    return sent


def ticking(views_at):
    """Views whose clock advances as the handler reads them: (time, view) pairs."""
    clock = Clock()

    def views():
        for at, view in views_at:
            clock.now = at
            yield view
    return clock, views()


def test_long_generations_send_a_bounded_stream_of_bytes(monkeypatch):
    tick, per_tick, total = 0.25, 16, 1024  # 64 tokens a second: 16 s for 1,024 tokens
    views = [(i * tick, runner.JobView("Generating", state=runner.RUNNING, value=comparison(n), fresh=True,
                                       elapsed=i * tick)) for i, n in enumerate(range(per_tick, total + 1, per_tick))]
    end = len(views) * tick
    views.append((end, runner.JobView("Generating", state=runner.DONE, result=comparison(total, done=True),
                                      elapsed=end)))
    clock, stream = ticking(views)
    sent = drive(monkeypatch, stream, clock)
    outputs = [(at, len(out["output"].encode())) for at, out in sent if "output" in out]
    every_tick = sum(len(render.columns_html(v.value).encode()) for _, v in views[:-1])
    throttled = sum(size for _, size in outputs[:-1])
    print(f"columns sent: {throttled / end / 1000:.0f} kB/s throttled, {every_tick / end / 1000:.0f} kB/s at every "
          f"tick; {len(outputs) - 1} redraws for {len(views) - 1} ticks; final {outputs[-1][1] / 1000:.0f} kB")
    assert throttled / end <= 1.5 * redraw.BYTES_PER_SECOND  # the first redraw is free of the budget
    assert throttled < every_tick / 2
    gaps = [b - a for (a, _), (b, _) in zip(outputs, outputs[1:])]
    assert max(gaps) <= redraw.MOST + tick  # the columns still move at least every two seconds
    statuses = [out for _, out in sent if "status" in out]
    assert len(statuses) >= len(views)  # the status line at every tick
    assert "Done in" in sent[-1][1]["status"] and sent[-1][1]["metrics"] is not None


def test_a_stop_shows_in_the_next_yield_and_the_numbers_follow(monkeypatch):
    views = [(0.0, runner.JobView("Generating", state=runner.RUNNING, value=comparison(600), fresh=True)),
             (0.1, runner.JobView("Generating", state=runner.RUNNING, value=comparison(610), fresh=True)),
             (0.2, runner.JobView("Generating", state=runner.RUNNING, value=comparison(612, stopped=True),
                                  fresh=True)),
             (3.0, runner.JobView("Generating", state=runner.DONE, result=comparison(612, done=True, stopped=True)))]
    clock, stream = ticking(views)
    sent = drive(monkeypatch, stream, clock)
    at_stop = next(out for at, out in sent if at == 0.2)
    assert "scoring the tokens generated" in at_stop["status"] and "stopped" in at_stop["output"]  # not throttled
    last = sent[-1][1]
    assert "Stopped at token 612" in last["status"] and "612 tokens generated" in last["status"]
    assert len(last["metrics"]) == 6  # a row per column: scored after the Stop
