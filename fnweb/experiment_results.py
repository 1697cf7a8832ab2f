"""The result of a lesion/preserve experiment: rows, curve, files and a plain reading.

``ExperimentResult`` holds what ``fnweb.experiments`` measured: one row per component
lesioned (and one for the union of all components) against matched random controls,
and the preservation curve (top-m components kept against random keeps of the same
per-layer sizes). It writes itself as two CSV tables and one JSON file (atomically),
reads the JSON back, and says in one paragraph what the numbers mean.

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

from .errors import FnwebError
from .io import read_text, write_atomic

FILE_STEM = "experiment"


@dataclass
class LesionRow:
    """One component (or the union) lesioned, beside random neurons of the same per-layer sizes."""

    component: str  # the component id, or "union"
    ids: list[int]  # the components lesioned together
    neurons: int  # channels lesioned
    share: float  # of all the model's channels at the site
    ce: float  # held-out cross-entropy with the lesion (nats per token)
    dce: float  # ce - baseline ce
    kl: float  # mean next-token KL(baseline || lesioned)
    random_dce_mean: float
    random_dce_std: float
    random_kl_mean: float
    random_kl_std: float
    dce_ratio: Optional[float]  # dce / random_dce_mean (None when the random change is ~0 or negative)
    kl_ratio: Optional[float]  # kl / random_kl_mean
    prompts: int  # held-out prompts this row was measured on
    densest_layer: int = -1  # the layer where the lesion takes the largest share
    densest_share: float = 0.0  # that share of the layer's channels
    acc: Optional[float] = None  # multiple-choice accuracy with the lesion
    random_acc_mean: Optional[float] = None
    random_acc_std: Optional[float] = None
    stability: Optional[float] = None  # the component's map stability from its template's build (None: unknown)


@dataclass
class CurvePoint:
    """The top ``m`` components kept (all other neurons of the masked layers zeroed)."""

    m: int
    ids: list[int]  # the components kept, strongest lesion effect first
    share_kept: float  # of all the model's channels at the site
    ce: float
    kl: float
    random_ce_mean: float
    random_ce_std: float
    random_kl_mean: float
    random_kl_std: float
    prompts: int
    acc: Optional[float] = None
    random_acc_mean: Optional[float] = None
    random_acc_std: Optional[float] = None


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
    baseline_acc: Optional[float] = None
    mcq_items: int = 0
    partial: bool = False  # stopped before the end: rows cover only what was measured
    partial_note: str = ""  # what a partial result covers
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # ---- tables ----

    def component_table(self) -> list[dict]:
        """Rows as plain dicts (the union last), with the baseline beside each."""
        rows = self.rows + ([self.union] if self.union else [])
        return [{**asdict(r), "ids": " ".join(map(str, r.ids)), "baseline_ce": self.baseline_ce,
                 "partial": self.partial} for r in rows]

    def curve_table(self) -> list[dict]:
        return [{**asdict(p), "ids": " ".join(map(str, p.ids)), "baseline_ce": self.baseline_ce,
                 "partial": self.partial} for p in self.curve]

    def components_csv(self) -> str:
        return _csv(self.component_table(), [f.name for f in fields(LesionRow)] + ["baseline_ce", "partial"])

    def curve_csv(self) -> str:
        return _csv(self.curve_table(), [f.name for f in fields(CurvePoint)] + ["baseline_ce", "partial"])

    # ---- JSON ----

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentResult":
        try:
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            values["rows"] = [LesionRow(**r) for r in data["rows"]]
            values["union"] = LesionRow(**data["union"]) if data.get("union") else None
            values["curve"] = [CurvePoint(**p) for p in data["curve"]]
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise FnwebError(f"Not an fnweb experiment result ({type(exc).__name__}: {exc}).") from exc

    @classmethod
    def from_json(cls, text: str) -> "ExperimentResult":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise FnwebError(f"The experiment file is not valid JSON: {exc.msg} at line {exc.lineno}.") from exc

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
        }

    # ---- words ----

    def table_text(self) -> str:
        """A fixed-width table of the lesion rows and the curve, for a terminal."""
        return table_text(self)

    def reading(self) -> str:
        """One paragraph that says what the numbers mean."""
        return reading(self)


def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue()


def ratio(value: float, control: float) -> Optional[float]:
    """value / control, or None when the control is too small to divide by."""
    if control <= 1e-6 or not math.isfinite(value):
        return None
    return value / control


def beats_random(row: LesionRow, sigmas: float = 2.0) -> bool:
    """True when the lesion hurts more than its random control, beyond ``sigmas`` spreads."""
    return row.dce > row.random_dce_mean + sigmas * max(row.random_dce_std, 1e-9)


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %" if share >= 0.001 else f"{100 * share:.2f} %"


def units_of(result: ExperimentResult) -> str:
    """What the masked channels are called at the result's site."""
    return "MLP-output channels" if result.settings.get("site") == "mlp_output" else "neurons"


def _lesion_sentence(row: LesionRow, draws: int, units: str) -> str:
    verb = "raised" if row.dce > 0 else "changed"
    control = f"{row.random_dce_mean:+.3f} ± {row.random_dce_std:.3f} over {draws} draw{'s' if draws != 1 else ''}"
    where = f"; {_pct(row.densest_share)} of layer {row.densest_layer}" if row.densest_layer >= 0 else ""
    head = f"lesioning component {row.component} ({_pct(row.share)} of {units}{where}) {verb} cross-entropy by {row.dce:+.3f} nats"
    if row.dce_ratio is not None and row.dce > 0:
        return f"{head}, {row.dce_ratio:.1f}x the change from random {units} of the same per-layer sizes ({control})"
    return f"{head}, against random {units} of the same per-layer sizes: {control}"


def _curve_sentence(result: ExperimentResult) -> str:
    if not result.curve:
        return ""
    point, units = result.curve[0], units_of(result)
    last = result.curve[-1]
    text = (
        f" Keeping only the top component ({_pct(point.share_kept)} of {units}, all others in the masked layers "
        f"zeroed) gave cross-entropy {point.ce:.2f} against {point.random_ce_mean:.2f} ± {point.random_ce_std:.2f} "
        f"for random {units} kept in the same numbers"
    )
    if last.m > 1:
        text += (
            f"; keeping all {last.m} ({_pct(last.share_kept)}) gave {last.ce:.2f} against "
            f"{last.random_ce_mean:.2f} ± {last.random_ce_std:.2f}"
        )
    return text + f" (the unchanged model: {result.baseline_ce:.2f})."


def reading(result: ExperimentResult) -> str:
    """'lesioning component 3, 1.1 % of neurons, raised cross-entropy 9x more than random ...'"""
    draws = int(result.settings.get("draws", 0))
    if not result.rows:
        return "Nothing was measured yet" + (f": {result.partial_note}" if result.partial_note else ".")
    strongest = max(result.rows, key=lambda r: r.dce)
    if draws > 1:
        beating = (f"{sum(beats_random(r) for r in result.rows)} of {len(result.rows)} components hurt more than "
                   "their random control by over two standard deviations.")
    else:
        beating = (f"{sum(r.dce > r.random_dce_mean for r in result.rows)} of {len(result.rows)} components hurt "
                   "more than their random control (one draw: no spread to judge by).")
    text = (
        f"On {result.rows[0].prompts} held-out prompts ({result.tokens:,} scored tokens; the unchanged model's "
        f"cross-entropy is {result.baseline_ce:.3f} nats per token), {_lesion_sentence(strongest, draws, units_of(result))}. "
        + beating
    )
    if result.union is not None and len(result.rows) > 1:
        u = result.union
        text += (
            f" Lesioning all {len(u.ids)} together ({_pct(u.share)}) raised it by {u.dce:+.3f} against "
            f"{u.random_dce_mean:+.3f} ± {u.random_dce_std:.3f} for random {units_of(result)}"
            + (f" ({u.dce_ratio:.1f}x)." if u.dce_ratio is not None else ".")
        )
    text += _curve_sentence(result)
    if result.baseline_acc is not None and result.union is not None and result.union.acc is not None:
        text += (
            f" Multiple-choice accuracy ({result.mcq_items} items) went from {result.baseline_acc:.2f} to "
            f"{result.union.acc:.2f} with the union lesioned (random: {result.union.random_acc_mean:.2f})."
        )
    if result.partial:
        text += f" PARTIAL RESULT: {result.partial_note}"
    return text


def table_text(result: ExperimentResult) -> str:
    head = (f"{'component':>9} {'share':>7} {'dCE':>8} {'random dCE':>16} {'ratio':>6} "
            f"{'KL':>7} {'random KL':>15} {'ratio':>6} {'stable':>6}")
    lines = [f"Baseline cross-entropy {result.baseline_ce:.4f} nats/token on {result.prompts} prompts "
             f"({result.tokens:,} tokens)" + (" [PARTIAL]" if result.partial else ""), "", head]
    for r in result.rows + ([result.union] if result.union else []):
        lines.append(
            f"{r.component:>9} {_pct(r.share):>7} {r.dce:>+8.4f} {r.random_dce_mean:>+8.4f} ±{r.random_dce_std:<6.4f} "
            f"{_fmt_ratio(r.dce_ratio):>6} {r.kl:>7.4f} {r.random_kl_mean:>7.4f} ±{r.random_kl_std:<6.4f} "
            f"{_fmt_ratio(r.kl_ratio):>6} {'-' if r.stability is None else f'{r.stability:.2f}':>6}"
        )
    if result.curve:
        lines += ["", f"{'kept m':>6} {'share':>7} {'CE':>8} {'random CE':>16} {'KL':>8} {'random KL':>16}"]
        for p in result.curve:
            lines.append(
                f"{p.m:>6} {_pct(p.share_kept):>7} {p.ce:>8.4f} {p.random_ce_mean:>8.4f} ±{p.random_ce_std:<6.4f} "
                f"{p.kl:>8.4f} {p.random_kl_mean:>8.4f} ±{p.random_kl_std:<6.4f}"
            )
    return "\n".join(lines)


def _fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}x"
