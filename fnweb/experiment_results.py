"""The result of a lesion/preserve experiment: rows, curve, files and a plain reading.

``ExperimentResult`` holds what ``fnweb.experiments`` measured: one row per component
lesioned (and one for the union of all components) against matched random controls,
and the preservation curve (top-m components kept against random keeps of the same
per-layer sizes). Each row holds its numbers by metric (keys of ``fnweb.metrics.METRICS``):
``network[metric]`` with the network's channels lesioned (or kept), ``random[metric]``
a ``Stat`` (mean, sd) over the random draws, and ``ratio[metric]`` for effect sizes.
It writes itself as two CSV tables (one column per metric and statistic, named as
before: ``dce``, ``random_dce_mean``, ``random_dce_std``, ``dce_ratio``, ...) and one
JSON file (atomically), reads the JSON back (also the flat rows older versions wrote),
and says in one paragraph what the numbers mean; ``experiment_tables`` shows them.

It knows nothing about models or how the numbers were measured.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from .archs import DEFAULT_SITE, SITES
from .controls import CONTROLS
from .errors import FnwebError
from .evidence_results import DoseCurve, dose_sentence, variant_sentences
from .interventions import DEFAULT_INTERVENTION, INTERVENTIONS
from .io import parse_json, read_text, write_atomic
from .metrics import METRICS, Stat
from .significance import LEVEL, draws_needed, smallest_p

FILE_STEM = "experiment"
LESION_METRICS = ("dce", "kl", "acc")  # what a lesion row compares with its random control
CURVE_METRICS = ("ce", "kl", "acc")  # what a point of the preservation curve compares
TEST_METRICS = ("excess", "p", "p_holm")  # a lesion row's tests, each a column of its own
INTERVAL_METRICS = ("dce", "excess", "acc")  # a lesion row's 95 % intervals: columns {key}_low, {key}_high


@dataclass
class LesionRow:
    """One component (or the union) lesioned, beside random neurons of the same per-layer sizes."""

    component: str  # the component id, or "union"
    ids: list[int]  # the components lesioned together
    neurons: int  # channels lesioned
    share: float  # of all the model's channels at the site
    prompts: int  # held-out prompts this row was measured on
    network: dict[str, Optional[float]]  # metric -> value with the lesion: ce, dce (ce - baseline ce), kl, acc
    random: dict[str, Stat]  # metric -> mean and sd over the random draws (None: not measured)
    ratio: dict[str, Optional[float]]  # effect metric -> network / random mean (None: random change ~0 or negative)
    densest_layer: int = -1  # the layer where the lesion takes the largest share
    densest_share: float = 0.0  # that share of the layer's channels
    stability: Optional[float] = None  # the component's map stability from its template's build (None: unknown)
    tests: dict[str, Stat] = field(default_factory=dict)  # metric -> Stat: p, p_holm; dce, excess, acc with intervals
    control: str = "layer"  # how its random twins were drawn (fnweb.controls.CONTROLS)
    massive: str = "keep"  # what it did with massive-activation channels (fnweb.controls.MASSIVE)
    variant: str = ""  # a variant row's difference from its component's main row ("" for a main row)


@dataclass
class CurvePoint:
    """The top ``m`` components kept (all other neurons of the masked layers zeroed)."""

    m: int
    ids: list[int]  # the components kept, strongest lesion effect first
    share_kept: float  # of all the model's channels at the site
    prompts: int
    network: dict[str, Optional[float]]  # metric -> value with only these kept: ce, kl, acc
    random: dict[str, Stat]  # metric -> mean and sd over random keeps of the same sizes
    ratio: dict[str, Optional[float]] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """Everything an experiment measured, and how (``settings``)."""

    baseline_ce: float  # held-out cross-entropy of the unchanged model
    rows: list[LesionRow]  # one per component, in component order
    union: Optional[LesionRow]  # every chosen component lesioned together
    curve: list[CurvePoint]  # m = 1..k
    settings: dict  # model, template, held-out sets, draws, seed, ...
    prompts: int  # held-out prompts in the set
    tokens: int  # scored tokens of those prompts
    baseline_acc: Optional[float] = None  # the task's accuracy, unchanged model
    task: Optional[dict] = None  # the task scored: name, source, items, chance, majority, scoring
    partial: bool = False  # stopped before the end: rows cover only what was measured
    partial_note: str = ""  # what a partial result covers
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # rows again without massive channels, or against another control
    variants: list[LesionRow] = field(default_factory=list)
    dose: Optional[DoseCurve] = None  # a component scaled by each factor α against its twins

    @property
    def lesion_rows(self) -> list[LesionRow]:
        """The rows, the union, then the variant rows."""
        return self.rows + ([self.union] if self.union else []) + self.variants

    def baseline(self, metric: str) -> Optional[float]:
        """The unchanged model's value of a metric: measured (ce, acc), or fixed by its definition (kl: 0)."""
        return {"ce": self.baseline_ce, "acc": self.baseline_acc}.get(metric, METRICS[metric].unchanged)

    # ---- tables ----

    @property
    def level(self) -> float:
        """The family-wise error rate the components were tested at."""
        return float(self.settings.get("level") or LEVEL)

    def survivors(self) -> list[LesionRow]:
        """The components whose Holm-adjusted permutation p is at most the level."""
        return [r for r in self.rows if survives(r, self.level)]

    def component_table(self) -> list[dict]:
        """Rows as flat dicts (one key per metric and statistic; the union last), with the baseline beside each."""
        return [{**_flat(r), "survives": survives(r, self.level) if "p_holm" in r.tests else None,
                 "baseline_ce": self.baseline_ce, "partial": self.partial} for r in self.lesion_rows]

    def curve_table(self) -> list[dict]:
        return [{**_flat(p), "baseline_ce": self.baseline_ce, "partial": self.partial} for p in self.curve]

    def components_csv(self) -> str:
        columns = _columns(LesionRow, LESION_METRICS, ("ce",)) + list(TEST_METRICS)
        columns += [f"{key}_{end}" for key in INTERVAL_METRICS for end in ("low", "high")]
        return _csv(self.component_table(), columns + ["survives", "baseline_ce", "partial"])

    def curve_csv(self) -> str:
        return _csv(self.curve_table(), _columns(CurvePoint, CURVE_METRICS, ()) + ["baseline_ce", "partial"])

    # ---- JSON ----

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentResult":
        try:
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            values["rows"] = [_row(LesionRow, r) for r in data["rows"]]
            values["union"] = _row(LesionRow, data["union"]) if data.get("union") else None
            values["curve"] = [_row(CurvePoint, p) for p in data["curve"]]
            values["variants"] = [_row(LesionRow, r) for r in data.get("variants", [])]
            values["dose"] = DoseCurve.from_dict(data["dose"]) if data.get("dose") else None
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise FnwebError(f"Not an fnweb experiment result ({type(exc).__name__}: {exc}).") from exc

    @classmethod
    def from_json(cls, text: str) -> "ExperimentResult":
        return cls.from_dict(parse_json(text, "The experiment file"))

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentResult":
        path = Path(path)
        if not path.exists():
            raise FnwebError(f"Experiment file not found: {path}")
        return cls.from_json(read_text(path))

    def save(self, folder: str | Path, stem: str = FILE_STEM) -> dict[str, Path]:
        """Write ``{stem}.json``, ``{stem}_components.csv`` and ``{stem}_curve.csv`` atomically."""
        folder = Path(folder)
        return {
            "json": write_atomic(folder / f"{stem}.json", self.to_json()),
            "components": write_atomic(folder / f"{stem}_components.csv", self.components_csv()),
            "curve": write_atomic(folder / f"{stem}_curve.csv", self.curve_csv()),
            **({"dose": write_atomic(folder / f"{stem}_dose.csv", self.dose.dose_csv())} if self.dose else {}),
        }

    # ---- words ----

    def reading(self) -> str:
        """One paragraph that says what the numbers mean."""
        return reading(self)


# ---- one row per metric and statistic, and back -------------------------------------------


def _columns(kind: type, compared: tuple[str, ...], network_only: tuple[str, ...]) -> list[str]:
    """The CSV columns of a row type: its plain fields, then per metric its value, random mean and sd, ratio."""
    plain = [f.name for f in fields(kind) if f.name not in ("network", "random", "ratio", "tests")]
    per_metric = list(network_only)
    for key in compared:
        per_metric += [key, f"random_{key}_mean", f"random_{key}_std"]
        per_metric += [f"{key}_ratio"] if METRICS[key].ratio and kind is LesionRow else []
    return plain + per_metric


def _flat(row) -> dict:
    """A row as one value per column (the CSV's layout, and older versions' JSON layout)."""
    flat = {f.name: getattr(row, f.name) for f in fields(row) if f.name not in ("network", "random", "ratio", "tests")}
    flat["ids"] = " ".join(map(str, row.ids))
    flat.update(row.network)
    for key, stat in row.random.items():
        flat[f"random_{key}_mean"], flat[f"random_{key}_std"] = stat.mean, stat.sd
    flat.update({f"{key}_ratio": value for key, value in row.ratio.items()})
    for key, stat in getattr(row, "tests", {}).items():
        flat.setdefault(key, stat.mean)
        if key in INTERVAL_METRICS:
            flat[f"{key}_low"], flat[f"{key}_high"] = stat.low, stat.high
    return flat


def _row(kind: type, data: dict):
    """A row from its JSON: nested by metric, or flat (one field per metric and statistic, as older versions wrote)."""
    data = dict(data)
    if "network" not in data:  # an older file: gather the flat fields by metric
        data["network"] = {key: data.pop(key) for key in METRICS if key in data}
        data["random"] = {key: {"mean": data.pop(f"random_{key}_mean"), "sd": data.pop(f"random_{key}_std", None)}
                          for key in METRICS if f"random_{key}_mean" in data}
        data["ratio"] = {key: data.pop(f"{key}_ratio") for key in METRICS if f"{key}_ratio" in data}
    data["random"] = {key: Stat(**stat) for key, stat in data["random"].items()}
    if "tests" in data:
        data["tests"] = {key: Stat(**stat) for key, stat in data["tests"].items()}
    return kind(**data)


def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue()


def row_name(row: LesionRow) -> str:
    """A row's name for people: its component (or union), and a variant's difference."""
    return f"{row.component} ({row.variant})" if row.variant else row.component


def ratio(value: float, control: float) -> Optional[float]:
    """value / control, or None when the control is too small to divide by."""
    if control <= 1e-6 or not math.isfinite(value):
        return None
    return value / control


def survives(row: LesionRow, level: float = LEVEL) -> bool:
    """Whether the row's Holm-adjusted permutation p is at most ``level``."""
    adjusted = row.tests.get("p_holm")
    return adjusted is not None and adjusted.mean is not None and adjusted.mean <= level


def beats_random(row: LesionRow, sigmas: float = 2.0, metric: str = "dce") -> bool:
    """True when the lesion does worse than its random control on ``metric``, beyond ``sigmas`` spreads."""
    value, control = row.network.get(metric), row.random.get(metric)
    if value is None or control is None or control.mean is None:
        return False
    return METRICS[metric].worse(value, control, sigmas)


def pct(share: float) -> str:
    return f"{100 * share:.1f} %" if share >= 0.001 else f"{100 * share:.2f} %"


def units_of(result: ExperimentResult) -> str:
    """What the masked channels are called at the result's site."""
    site = SITES.get(result.settings.get("site") or DEFAULT_SITE, SITES[DEFAULT_SITE])
    return site.units


def _lesion_sentence(row: LesionRow, draws: int, units: str, settings: dict) -> str:
    dce, control, times = row.network["dce"], row.random["dce"], row.ratio.get("dce")
    verb = "raised" if dce > 0 else "changed"
    spread = f"{control.mean:+.3f} ± {control.sd:.3f} over {draws} draw{'s' if draws != 1 else ''}"
    where = f"; {pct(row.densest_share)} of layer {row.densest_layer}" if row.densest_layer >= 0 else ""
    intervention = INTERVENTIONS.get(settings.get("intervention") or DEFAULT_INTERVENTION,
                                     INTERVENTIONS[DEFAULT_INTERVENTION])
    done = intervention.done_to(f"component {row.component}", settings.get("alpha"))
    head = (f"{done} ({pct(row.share)} of {units}{where}) {verb} cross-entropy "
            f"by {dce:+.3f} nats")
    matched = CONTROLS[row.control].title if row.control in CONTROLS else "same count per layer"
    if times is not None and dce > 0:
        return f"{head}, {times:.1f}x the change from random {units} ({matched}; {spread})"
    return f"{head}, against random {units} ({matched}): {spread}"


def _curve_sentence(result: ExperimentResult) -> str:
    if not result.curve:
        return ""
    point, units = result.curve[0], units_of(result)
    last = result.curve[-1]
    first_random, last_random = point.random["ce"], last.random["ce"]
    text = (
        f" Keeping only the top component ({pct(point.share_kept)} of {units}, all others in the masked layers "
        f"zeroed) gave cross-entropy {point.network['ce']:.2f} against {first_random.mean:.2f} ± "
        f"{first_random.sd:.2f} for random {units} kept in the same numbers"
    )
    if last.m > 1:
        text += (
            f"; keeping all {last.m} ({pct(last.share_kept)}) gave {last.network['ce']:.2f} against "
            f"{last_random.mean:.2f} ± {last_random.sd:.2f}"
        )
    return text + f" (the unchanged model: {result.baseline_ce:.2f})."


def _beating(result: ExperimentResult, draws: int) -> str:
    if any("p" in r.tests for r in result.rows):
        return _tests_sentence(result, draws)
    if draws > 1:
        return (f"{sum(beats_random(r) for r in result.rows)} of {len(result.rows)} components hurt more than "
                "their random control by over two standard deviations.")
    worse = sum(r.network["dce"] > r.random["dce"].mean for r in result.rows)
    return (f"{worse} of {len(result.rows)} components hurt more than their random control "
            "(one draw: no spread to judge by).")


def _tests_sentence(result: ExperimentResult, draws: int) -> str:
    """Which components survive the permutation test with Holm's correction, and what the draws allow."""
    m, level = len(result.rows), result.level
    head = (f"Ranked among {draws} random draws each and Holm-corrected across {m} component{'s' if m != 1 else ''} "
            f"at {level:g}, ")
    kept = result.survivors()
    if kept:
        named = ", ".join(f"{r.component} (p = {r.tests['p'].mean:.3f}, Holm {r.tests['p_holm'].mean:.3f})"
                          for r in kept)
        survive, plural = "survives" if len(kept) == 1 else "survive", "s" if len(kept) > 1 else ""
        return head + f"{len(kept)} of {m} {survive}: component{plural} {named}."
    if smallest_p(draws) > level / m:
        return (head + f"no component can survive: the smallest p {draws} draws can give is {smallest_p(draws):.3f}, "
                f"and Holm across {m} needs {level / m:.4f} or less, so at least {draws_needed(m, level)} draws.")
    best = min(result.rows, key=lambda r: (r.tests["p"].mean if r.tests["p"].mean is not None else 2.0))
    return head + f"none survives (the smallest p: component {best.component}, {best.tests['p'].mean:.3f})."


def _interval_words(row: LesionRow) -> str:
    """' (95 % interval over prompts ...; beyond random ...)' when the row has intervals."""
    dce, excess = row.tests.get("dce"), row.tests.get("excess")
    if dce is None or dce.low is None or excess is None or excess.low is None:
        return ""
    return (f" (95 % interval over prompts {dce.low:+.3f} to {dce.high:+.3f}; beyond the random mean "
            f"{excess.mean:+.3f}, {excess.low:+.3f} to {excess.high:+.3f})")


def _union_sentence(result: ExperimentResult) -> str:
    u = result.union
    if u is None or len(result.rows) < 2:
        return ""
    times = u.ratio.get("dce")
    return (
        f" Lesioning all {len(u.ids)} together ({pct(u.share)}) raised it by {u.network['dce']:+.3f} against "
        f"{u.random['dce'].mean:+.3f} ± {u.random['dce'].sd:.3f} for random {units_of(result)}"
        + (f" ({times:.1f}x)." if times is not None else ".")
    )


def reading(result: ExperimentResult) -> str:
    """'lesioning component 3, 1.1 % of neurons, raised cross-entropy 9x more than random ...'"""
    draws = int(result.settings.get("draws", 0))
    if not result.rows:
        return "Nothing was measured yet" + (f": {result.partial_note}" if result.partial_note else ".")
    strongest = max(result.rows, key=lambda r: r.network["dce"])
    text = (
        f"On {result.rows[0].prompts} held-out prompts ({result.tokens:,} scored tokens; the unchanged model's "
        f"cross-entropy is {result.baseline_ce:.3f} nats per token), "
        f"{_lesion_sentence(strongest, draws, units_of(result), result.settings)}{_interval_words(strongest)}. "
        + _beating(result, draws)
    )
    text += _union_sentence(result) + _curve_sentence(result)
    text += variant_sentences(result.rows, result.variants) + dose_sentence(result.dose)
    union_acc = result.union.network.get("acc") if result.union is not None else None
    if result.baseline_acc is not None and union_acc is not None and result.task:
        task = result.task
        text += (
            f" Accuracy on the {task['name']} task ({task['items']} items; chance {task['chance']:.2f}) went from "
            f"{result.baseline_acc:.2f} to {union_acc:.2f} with the union lesioned (random: "
            f"{result.union.random['acc'].mean:.2f})."
        )
    if result.partial:
        text += f" PARTIAL RESULT: {result.partial_note}"
    return text
