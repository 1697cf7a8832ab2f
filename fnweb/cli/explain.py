"""``python -m fnweb explain``: print what each component of a template does (its card, as text).

    python -m fnweb explain TEMPLATE [--model MODEL] [--top N] [--component C ...]

Prints the cards stored in the template. With ``--model``, the stored cards are
checked against that model's tokenizer, and a template without usable cards (the
original tool's files, older fnweb files) gets cards made on demand: the model runs
over ``--samples`` prompts of each of the template's prompt sets (or of the built-in
sets when those cannot be read here).
"""

from __future__ import annotations

import argparse
import sys

from ..cards import card_text
from ..errors import FnwebError
from ..explain import ON_DEMAND_SAMPLES, cards_for
from ..ids import model_alias
from ..models import ModelRequest, load_model
from ..prompts import PromptSource, sample_pairs
from ..templates import Template
from . import run_cli

MAX_SAMPLES = 1000  # prompts per set for on-demand cards: each is a forward pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fnweb explain", description="Print each component's card: its strongest "
                                "contexts, the prompt sets that drive it and the tokens it promotes.")
    p.add_argument("template", help="template file (global_templates.json) or its folder")
    p.add_argument("--model", default=None, help="Hub id, local folder or 'embedded': check the stored cards "
                   "against it, or make cards on demand for a template without them")
    p.add_argument("--top", type=int, default=5, help="contexts printed per component (5)")
    p.add_argument("--component", type=int, nargs="+", default=None, help="only these components (all)")
    p.add_argument("--datasets", nargs="+", default=None, help="prompt sets for on-demand cards "
                   "(the template's own, or the built-in sets)")
    p.add_argument("--samples", type=int, default=ON_DEMAND_SAMPLES,
                   help=f"prompts per set for on-demand cards ({ON_DEMAND_SAMPLES})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return p


def print_cards(template: Template, cards, components=None, top: int = 5) -> None:
    coverage = {row["component"]: row for row in template.coverage()}
    for c in components or template.component_ids:
        print(card_text(cards, c, coverage.get(c), top))
        print()


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        if not 1 <= args.top <= 200:
            raise FnwebError(f"--top must lie between 1 and 200 (got {args.top}).")
        if not 1 <= args.samples <= MAX_SAMPLES:
            raise FnwebError(f"--samples must lie between 1 and {MAX_SAMPLES} (got {args.samples}).")
        template = Template.load(args.template)
        if args.component:
            template.check_components(args.component)
        sources = [PromptSource(n) for n in args.datasets] if args.datasets else None
        lm = None
        if args.model:
            model_id = model_alias(args.model)
            request = ModelRequest(model_id, device=args.device)
            request.validate()
            if sources:
                sample_pairs(sources, args.samples)  # readable, before the model loads
            lm = load_model(request)
        cards, note = cards_for(template, lm, sources=sources, samples=args.samples, top=max(args.top, 20))
        if note:
            print(f"note: {note}", file=sys.stderr)
        print_cards(template, cards, args.component, args.top)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
