"""What component cards cost: build time, file size, and the time to show them, on the embedded model.

    python bench/cards.py [--out bench/results/cards.json]

Builds one template over 100 built-in prompts (20 each of factual, arithmetic, code,
creative and multilingual; 128 tokens; k 10; the cards' default 20 contexts per
component), then measures:

- the time the build spends on the cards, against the whole build;
- the bytes the cards add to the template file;
- loading the file and drawing every component's card as the Networks tab does
  (``fnweb.ui.cards_panel.show_card``, no model), best of 5, against a 1 s target;
- cards made on demand for the same template without them (the model runs over 10
  prompts of each of its 5 sets), for comparison.

Prints a table and writes the figures as JSON. A run takes 3-4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fnweb.build import BuildConfig, build_template  # noqa: E402
from fnweb.explain import cards_on_demand  # noqa: E402
from fnweb.models import load_model  # noqa: E402
from fnweb.prompts import PromptSource  # noqa: E402
from fnweb.templates import Template  # noqa: E402

SETS = ["factual", "arithmetic", "code", "creative", "multilingual"]


def show_all(path: Path) -> float:
    """Seconds to load the file into a session and draw every card (the Networks tab's work, no model)."""
    from fnweb.ui.cards_panel import show_card
    from fnweb.ui.state import Session

    start = time.perf_counter()
    session = Session()
    entry = session.add(Template.load(path), "uploaded", "bench")
    for component in entry.template.component_ids:
        html, _ = show_card(session, entry.name, str(component))
        assert f"fnc-card-{component}" in html
    seconds = time.perf_counter() - start
    session.close()
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "cards.json"))
    args = parser.parse_args(argv)
    lm = load_model()
    config = BuildConfig([PromptSource(f"builtin:{name}") for name in SETS], 20, 128, k=10)
    result = build_template(lm, config)
    template = result.template
    folder = Path(tempfile.mkdtemp(prefix="fnweb-bench-cards-"))
    with_cards = template.save(folder / "with.json")
    bare = copy.deepcopy(template)
    bare.cards = None
    without = bare.save(folder / "without.json")
    start = time.perf_counter()
    cards_on_demand(lm, bare)
    on_demand_s = time.perf_counter() - start
    show_s = min(show_all(with_cards) for _ in range(5))
    build_s = sum(result.seconds.values())
    figures = {
        "tokens": result.n_tokens,
        "build_s": round(build_s, 1),
        "cards_s": round(result.seconds["cards"], 2),
        "cards_share_of_build": round(result.seconds["cards"] / build_s, 4),
        "file_bytes_with_cards": with_cards.stat().st_size,
        "file_bytes_without_cards": without.stat().st_size,
        "cards_bytes": with_cards.stat().st_size - without.stat().st_size,
        "load_and_show_10_cards_s": round(show_s, 3),
        "on_demand_cards_s": round(on_demand_s, 1),
    }
    checks = [
        ("cards / build time", figures["cards_share_of_build"], "<= 0.05", figures["cards_share_of_build"] <= 0.05),
        ("cards bytes (10 components)", figures["cards_bytes"], "<= 300000", figures["cards_bytes"] <= 300_000),
        ("load file + draw 10 cards (s)", figures["load_and_show_10_cards_s"], "< 1.0",
         figures["load_and_show_10_cards_s"] < 1.0),
    ]
    figures["checks"] = [{"name": n, "value": v, "target": t, "ok": ok} for n, v, t, ok in checks]
    for name, value in figures.items():
        if name != "checks":
            print(f"{name:<28} {value}")
    print()
    for name, value, target, ok in checks:
        print(f"{name:<32} {value:<12} target {target:<10} {'ok' if ok else 'MISSED'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
