"""The result of an experiment repeated on template seeds: each matched component's effect seed by seed.

A ``SeedEffect`` is one template component of one seed, matched to a component of the
first seed (by map correlation, see ``template_seeds``), with its lesion row (the
experiment's ``LesionRow``: its change in cross-entropy, random controls and tests). A
``MatchedComponent`` gathers one first-seed component's effects over the seeds: the
seeds where it *matters* (its own permutation p at most the level), Fisher's
combination of its p-values and that combination Holm-corrected across components
(``survives``). ``SeedsResult`` holds them with each seed's ``ExperimentResult``; it
writes itself as JSON and a CSV (one line per component and seed), atomically, reads
the JSON back, and says in a paragraph what holds across seeds and what does not.

It knows nothing about models or how the numbers were measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from .errors import FnwebError
from .experiment_results import ExperimentResult, LesionRow, _csv, _row
from .io import read_text, write_atomic
from .significance import LEVEL, fisher, holm

SEEDS_STEM = "seeds"
CSV_COLUMNS = ["component", "seed", "seed_component", "map_correlation", "neurons", "share", "dce", "random_dce_mean",
               "random_dce_std", "excess", "excess_low", "excess_high", "p", "p_holm", "matters", "fisher_p",
               "fisher_p_holm", "survives_across_seeds", "partial"]


@dataclass
class SeedEffect:
    """One seed's component matched to a first-seed component, and its lesion row (None: not measured)."""

    reference: int  # the first seed's component
    seed: int  # the template's build seed
    component: int  # this seed's matched component
    correlation: float  # signed correlation of the two maps (1 for the first seed itself)
    row: Optional[LesionRow]

    def p(self) -> Optional[float]:
        test = self.row.tests.get("p") if self.row is not None else None
        return test.mean if test is not None else None


@dataclass
class MatchedComponent:
    """One first-seed component over the seeds."""

    component: int
    seeds: list[int]  # the seeds measured, in order
    matters: list[int]  # the seeds where its own permutation p is at most the level
    fisher_p: Optional[float]  # Fisher's combination of its p-values over the measured seeds
    fisher_p_holm: Optional[float] = None  # that, Holm-corrected across components
    survives: bool = False  # fisher_p_holm at most the level


def combine(effects: list[SeedEffect], level: float = LEVEL) -> list[MatchedComponent]:
    """Per first-seed component: where it matters, Fisher over seeds, Holm across components."""
    matched = []
    for component in dict.fromkeys(e.reference for e in effects):
        mine = [e for e in effects if e.reference == component and e.row is not None]
        ps = [e.p() for e in mine]
        matched.append(MatchedComponent(
            component=component, seeds=[e.seed for e in mine],
            matters=[e.seed for e, p in zip(mine, ps) if p is not None and p <= level],
            fisher_p=fisher(ps) if ps else None))
    for item, adjusted in zip(matched, holm([m.fisher_p for m in matched])):
        item.fisher_p_holm = adjusted
        item.survives = adjusted is not None and adjusted <= level
    return matched


@dataclass
class SeedsResult:
    """Every seed's experiment and the matched components' effects across them."""

    seeds: list[int]  # the template seeds built, the file's own first
    effects: list[SeedEffect]
    matched: list[MatchedComponent]
    experiments: list[ExperimentResult]  # one per measured seed, in seed order
    level: float = LEVEL
    partial: bool = False
    partial_note: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def survivors(self) -> list[MatchedComponent]:
        return [m for m in self.matched if m.survives]

    def effects_of(self, component: int) -> list[SeedEffect]:
        return [e for e in self.effects if e.reference == component]

    # ---- files ----

    def table(self) -> list[dict]:
        """One flat dict per component and seed (the CSV's lines)."""
        by_component = {m.component: m for m in self.matched}
        lines = []
        for e in self.effects:
            row, m = e.row, by_component.get(e.reference)
            tests = row.tests if row is not None else {}
            lines.append({
                "component": e.reference, "seed": e.seed, "seed_component": e.component,
                "map_correlation": e.correlation, "neurons": row.neurons if row else None,
                "share": row.share if row else None, "dce": row.network.get("dce") if row else None,
                "random_dce_mean": row.random["dce"].mean if row else None,
                "random_dce_std": row.random["dce"].sd if row else None,
                **{key: tests[key].mean if key in tests else None for key in ("excess", "p", "p_holm")},
                "excess_low": tests["excess"].low if "excess" in tests else None,
                "excess_high": tests["excess"].high if "excess" in tests else None,
                "matters": bool(m and e.seed in m.matters), "fisher_p": m.fisher_p if m else None,
                "fisher_p_holm": m.fisher_p_holm if m else None, "survives_across_seeds": bool(m and m.survives),
                "partial": self.partial,
            })
        return lines

    def to_csv(self) -> str:
        return _csv(self.table(), CSV_COLUMNS)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "SeedsResult":
        try:
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            values["effects"] = [SeedEffect(**{**e, "row": _row(LesionRow, e["row"]) if e.get("row") else None})
                                 for e in data["effects"]]
            values["matched"] = [MatchedComponent(**m) for m in data["matched"]]
            values["experiments"] = [ExperimentResult.from_dict(x) for x in data["experiments"]]
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise FnwebError(f"Not an fnweb template-seeds result ({type(exc).__name__}: {exc}).") from exc

    @classmethod
    def load(cls, path: str | Path) -> "SeedsResult":
        path = Path(path)
        if not path.exists():
            raise FnwebError(f"Template-seeds file not found: {path}")
        try:
            return cls.from_dict(json.loads(read_text(path)))
        except json.JSONDecodeError as exc:
            raise FnwebError(f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno}.") from exc

    def save(self, folder: str | Path, stem: str = SEEDS_STEM) -> dict[str, Path]:
        """Write ``{stem}.json`` and ``{stem}.csv`` atomically."""
        folder = Path(folder)
        return {"seeds": write_atomic(folder / f"{stem}.json", self.to_json()),
                "seeds_csv": write_atomic(folder / f"{stem}.csv", self.to_csv())}

    # ---- words ----

    def reading(self) -> str:
        return seeds_reading(self)


def _ps(effects: list[SeedEffect]) -> str:
    return ", ".join("—" if e.p() is None else f"{e.p():.3f}" for e in effects)


def _component_words(result: SeedsResult, m: MatchedComponent) -> str:
    effects = [e for e in result.effects_of(m.component) if e.row is not None]
    matches = ", ".join(f"{e.correlation:+.2f}" for e in effects if e.seed != result.seeds[0])  # not the anchor
    excess = ", ".join(f"{e.row.tests['excess'].mean:+.3f}" for e in effects if "excess" in e.row.tests)
    return (f"component {m.component} (matched at r = {matches or '—'}; beyond random {excess} nats; "
            f"p {_ps(effects)}; Fisher {m.fisher_p:.4f}, Holm {m.fisher_p_holm:.4f})")


def seeds_reading(result: SeedsResult) -> str:
    """What holds across seeds: the survivors, the components that matter in one seed only, and the rest."""
    measured = len(result.experiments)
    if not measured or not result.matched:
        return "No template seed was measured yet" + (f": {result.partial_note}" if result.partial_note else ".")
    level, n = result.level, len(result.matched)
    seeds = ", ".join(map(str, dict.fromkeys(e.seed for e in result.effects if e.row is not None)))
    text = (f"Across {measured} template seed{'s' if measured != 1 else ''} ({seeds}; "
            f"components matched to seed {result.seeds[0]}'s by map correlation), each component's permutation "
            f"p-values combined by Fisher's method and Holm-corrected across {n} components at {level:g}: ")
    kept = result.survivors()
    text += ("; ".join(_component_words(result, m) for m in kept) + " survive." if kept else
             "no component survives.")
    once = [m for m in result.matched if len(m.matters) == 1 and measured > 1]
    if once:
        text += " Mattering in one seed only (p at most " + f"{level:g}" + " there, not elsewhere): " + "; ".join(
            f"component {m.component} (seed {m.matters[0]})" for m in once) + "."
    always = [m for m in result.matched if len(m.matters) == measured and measured > 1]
    if always:
        text += f" Mattering in every seed: component{'s' if len(always) > 1 else ''} " + ", ".join(
            str(m.component) for m in always) + "."
    if result.partial:
        text += f" PARTIAL RESULT: {result.partial_note}"
    return text
