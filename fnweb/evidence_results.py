"""An experiment's evidence beyond its main rows: the dose-response block, and sentences that read the variants.

``DoseCurve`` holds a component multiplied by each factor α (0: removed, 1: unchanged,
above 1: amplified) beside random twins of the same per-layer sizes drawn by each control
(``fnweb.controls``): per factor, the network's value of each of ``DOSE_METRICS`` and, per
control, the ``Stat`` over its draws. It writes itself as JSON (``asdict``) and CSV
(``dose_csv``), and reads itself back. ``variant_sentences`` and ``dose_sentence`` say in
words what a result's variant rows (a component without its massive-activation channels,
or against another control) and its dose-response show. Rows are read by their fields
(``network``, ``random``, ``ratio``, ``variant``), so this module knows nothing about how
they were measured, nor about the rest of the result.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .metrics import METRICS, Stat

DOSE_METRICS = ("dce", "kl")  # what each factor compares with its twins


@dataclass
class DosePoint:
    """One factor α: the network's values and, per control, its twins' over their draws."""

    alpha: float
    network: dict[str, Optional[float]]  # metric -> value
    random: dict[str, dict[str, Stat]]  # control -> metric -> mean and sd over the draws


@dataclass
class DoseCurve:
    """A component multiplied by each factor, beside random twins of each control."""

    component: int
    share: float  # of all the model's channels at the site
    draws: int  # twins per factor and control
    prompts: int  # held-out prompts measured
    controls: list[str]  # names in fnweb.controls.CONTROLS
    points: list[DosePoint] = field(default_factory=list)  # by increasing α

    @classmethod
    def from_dict(cls, data: dict) -> "DoseCurve":
        points = [DosePoint(alpha=float(p["alpha"]), network=dict(p["network"]),
                            random={c: {k: Stat(**s) for k, s in by_metric.items()} for c, by_metric in
                                    p["random"].items()}) for p in data["points"]]
        return cls(component=int(data["component"]), share=float(data["share"]), draws=int(data["draws"]),
                   prompts=int(data["prompts"]), controls=[str(c) for c in data["controls"]], points=points)

    def dose_csv(self) -> str:
        """One line per factor: α, each metric's network value, and per control its twins' mean and sd."""
        columns = ["component", "alpha"]
        for key in DOSE_METRICS:
            columns += [key] + [f"{control}_{key}_{part}" for control in self.controls for part in ("mean", "std")]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for point in self.points:
            line = {"component": self.component, "alpha": point.alpha, **point.network}
            for control, by_metric in point.random.items():
                for key, stat in by_metric.items():
                    line[f"{control}_{key}_mean"], line[f"{control}_{key}_std"] = stat.mean, stat.sd
            writer.writerow({k: ("" if line.get(k) is None else line.get(k)) for k in columns})
        return out.getvalue()


def _against(row) -> str:
    """The row's change against its twins: the excess with its interval, and the permutation p (Holm when known)."""
    excess, p, holm = row.tests.get("excess"), row.tests.get("p"), row.tests.get("p_holm")
    unit = METRICS["dce"]
    words = f"{unit.format(row.network['dce'])} nats against its random twins' {unit.format(row.random['dce'].mean)}"
    if excess is not None and excess.low is not None:
        words += (f" (beyond them {unit.format(excess.mean)}, "
                  f"95 % {unit.format(excess.low)} to {unit.format(excess.high)})")
    if p is not None and p.mean is not None:
        corrected = holm is not None and holm.mean is not None
        words += f", p = {p.mean:.3f}" + (f" (Holm {holm.mean:.3f})" if corrected else "")
    return words


def _clear(row) -> bool:
    """The change is beyond its twins' mean over the whole 95 % interval."""
    excess = row.tests.get("excess")
    return excess is not None and excess.low is not None and excess.low > 0


def variant_sentences(rows: Sequence, variants: Sequence) -> str:
    """A sentence per variant row, beside its component's main row: does the effect hold without it?"""
    main = {r.component: r for r in rows}
    parts = []
    for row in variants:
        base = main.get(row.component)
        if base is None or row.network.get("dce") is None or base.network.get("dce") is None:
            continue
        parts.append(f" Component {row.component} {row.variant}: {_against(row)}; with the main row's setting: "
                     f"{_against(base)}.")
        if _clear(base) and not _clear(row):
            parts.append(f" Its effect beyond random vanishes {row.variant}.")
    return "".join(parts)


def dose_sentence(dose: Optional[DoseCurve]) -> str:
    """What scaling the dose component did, at the ends of the range, against its twins."""
    if dose is None or not dose.points:
        return ""
    low, high = dose.points[0], dose.points[-1]
    unit = METRICS["dce"]

    def twins(point: DosePoint) -> str:
        return ", ".join(f"{control} twins {unit.format(point.random[control]['dce'].mean)}"
                         for control in dose.controls if control in point.random)

    return (f" Scaling component {dose.component} by α = {low.alpha:g} changed cross-entropy by "
            f"{unit.format(low.network['dce'])} ({twins(low)}); by α = {high.alpha:g}, "
            f"{unit.format(high.network['dce'])} ({twins(high)}).")
