"""Compare as an argument: each intervention against its matched random control, in numbers and plain words."""

from __future__ import annotations

import pytest

from fnweb.compare import RANDOM_OF, ColumnResult, Comparison
from fnweb.metrics import METRICS, Stat
from fnweb.ui import render
from fnweb.verdicts import LARGER, SAME, SMALLER, Claim, Verdict, verdicts


@pytest.mark.parametrize("value, random, word", [
    (0.6, Stat(0.2, 0.02), LARGER),
    (0.298, Stat(0.374, 0.411), SAME),  # the French preset's numbers: within the draws' spread
    (0.22, Stat(0.2, 0.001), SAME),  # a tiny spread from few draws: within a factor 1.25 is still the same
    (0.05, Stat(0.5, 0.05), SMALLER),
])
def test_verdict_words(value, random, word):
    verdict = Verdict("lesion", "random", "kl", value, random, 3)
    assert verdict.word == word
    assert verdict.line().startswith(f"{value / random.mean:.1f} × random (KL {value:.3f} vs ")
    assert word in verdict.line()


def column(name, kl, sd=None, draws=1):
    return ColumnResult(name, name, "text", [1, 2], 0.02, metrics={"kl": Stat(kl, sd)}, draws=draws)


def test_each_intervention_meets_its_own_control_and_the_page_says_so():
    done = Comparison("p", [column("baseline", 0.0), column("lesion", 0.9), column("preserve", 2.0),
                            column("random", 0.1, 0.01, 3), column("random-preserve", 2.1, 0.2, 3)], done=True)
    found = verdicts(done, RANDOM_OF)
    assert {n: (v.control, v.word) for n, v in found.items()} == {"lesion": ("random", LARGER),
                                                                  "preserve": ("random-preserve", SAME)}
    html = render.columns_html(done)
    assert "9.0 × random" in html and "indistinguishable from random" in html
    frame = render.metrics_frame(done)
    assert frame["vs random"].tolist()[1:3] == [found["lesion"].line(), found["preserve"].line()]
    assert Claim("lesion").holds(found) and not Claim("preserve").holds(found) and Claim("preserve", SAME).holds(found)
    assert not Claim("lesion", metric="ce").holds(found)
    streaming = Comparison("p", done.columns, done=False)
    assert "× random" not in render.columns_html(streaming)  # no verdict before the numbers


def test_every_metric_header_is_explained():
    legend = render.metrics_legend()
    frame = render.metrics_frame(None)
    for header in frame.columns:
        assert f"**{header}**" in legend, header
    assert all(METRICS[key].help in legend for key in ("kl", "ce", "top1"))


def test_other_draws_are_viewable():
    col = column("random", 0.1, 0.01, 3)
    col.draw_texts = ["second <draw>", ""]
    html = render.columns_html(Comparison("p", [column("baseline", 0.0), col], done=True))
    assert html.count('<details class="fn-draw">') == 2 and "second &lt;draw&gt;" in html and "Draw 3" in html
