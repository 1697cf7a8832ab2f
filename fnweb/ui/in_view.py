"""Bringing results into view: after a click, scroll the page to the output once new content arrives there.

At 1280x800 the output of a comparison or an experiment renders far below the button
that started it; the visitor should not have to look for it. ``follow(trigger, target,
ready)`` adds a listener that runs in the browser only (no server round trip, no
queue): it notes the output's content at the click, then looks every ``POLL_MS`` for a
change that contains ``ready`` (a CSS selector, e.g. the first comparison card) and
scrolls that output to the middle of the window (smoothly), at most once per click, giving
up after ``GIVE_UP_S``; ``when`` (a JavaScript expression) limits it to some pages (one
opened with a link). Waiting for new content, rather than scrolling at once, keeps the
progress line beside the button in view for as long as nothing else is there to see.

It knows nothing about what the outputs show.
"""

from __future__ import annotations

import json
from typing import Callable

POLL_MS = 150
GIVE_UP_S = 900  # a preset's template build on a slow CPU can take minutes before the first token

_SCRIPT = """() => {
  if (!(%(when)s)) return;
  const target = %(target)s, ready = %(ready)s, started = Date.now();
  const node = () => document.getElementById(target);
  const before = node() ? node().innerHTML : null;
  const look = () => {
    const el = node();
    if (el && el.offsetParent !== null && el.innerHTML !== before && el.querySelector(ready)) {
      el.scrollIntoView({behavior: "smooth", block: "center"});
      return;
    }
    if (Date.now() - started < %(limit)d) setTimeout(look, %(poll)d);
  };
  setTimeout(look, %(poll)d);
}"""


def scroll_script(target: str, ready: str, when: str = "true") -> str:
    """The browser-side function: scroll element ``target`` (an id) into view once it changes and holds ``ready``
    (only when the JavaScript expression ``when`` holds)."""
    return _SCRIPT % {"target": json.dumps(target), "ready": json.dumps(ready), "limit": GIVE_UP_S * 1000,
                      "poll": POLL_MS, "when": when}


def follow(trigger: Callable, target: str, ready: str, when: str = "true"):
    """On ``trigger`` (e.g. ``button.click``), scroll to ``target`` once its new content holds ``ready``."""
    return trigger(None, None, None, js=scroll_script(target, ready, when), queue=False, api_visibility="private",
                   show_progress="hidden")


def wire(ctx) -> None:
    """Generate and Run experiment bring their output into view (the presets do so themselves)."""
    if "Compare" in ctx.tabs:
        follow(ctx.tabs["Compare"].generate.click, "fn-compare-output", ".fn-card")
    if "Experiments" in ctx.tabs:
        follow(ctx.tabs["Experiments"].run.click, "fn-exp-status", ".fn-progress, .fn-msg")
