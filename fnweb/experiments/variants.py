"""Evidence beyond the main rows: each component's variant rows, the dose-response, and what they need.

- A **variant row** is a component's row (the experiment's intervention) again, with its
  random twins drawn otherwise: with its massive-activation channels left alone in the
  intervention and never drawn (``massive`` spared: the row "without its outlier
  channels", for each component that holds one), or drawn by ``config.also_control``
  (e.g. matched on magnitude beside the per-layer control).
- The **dose-response**: ``config.dose_component`` multiplied by each factor of
  ``config.dose_alphas`` (the intervention of the table that takes a factor), beside
  random twins drawn by each of ``config.dose_controls``.

``check_statistics`` refuses, before any work, a run whose chosen intervention, control or
massive-channel policy needs capture statistics the template lacks (saying a rebuild adds
them); variants and dose controls that were only defaults are left out with a note instead.
It knows nothing about passes or results: plan and assemble read these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..channel_stats import require
from ..controls import CONTROLS, MASSIVE
from ..errors import FnwebError
from ..interventions import DEFAULT_INTERVENTION, INTERVENTIONS
from ..masks import MaskSpec, spilled
from ..templates import Template
from .config import ExperimentConfig

SPARED = next(name for name, policy in MASSIVE.items() if policy.from_network)  # leaves massive channels alone
DOSE = next(name for name, i in INTERVENTIONS.items() if i.takes_alpha and i.acts_on_network)  # multiplies by α


@dataclass(frozen=True)
class Variant:
    """A component's row again, with its twins drawn by ``control`` and massive channels as ``massive`` says."""

    component: int
    control: str
    massive: str
    label: str  # for people: "without massive channels", "magnitude control"


def check_statistics(template: Template, config: ExperimentConfig) -> None:
    """Refuse a chosen setting that needs the template's capture statistics when it has none."""
    needs = []
    if INTERVENTIONS[config.intervention].needs_stats:
        needs.append(f"The {config.intervention} intervention")
    for control in (config.control, config.also_control):
        if control is not None and CONTROLS[control].needs_stats:
            needs.append(f"The {control} control")
    if MASSIVE[config.massive].from_draws or MASSIVE[config.massive].from_network:
        needs.append(f"Leaving massive-activation channels {config.massive}")
    if needs:
        require(template.stats, " and ".join(needs))


def plan_variants(template: Template, config: ExperimentConfig, ids: Sequence[int]) -> tuple[list[Variant], list[str]]:
    """The variant rows of the components ``ids``, and notes on those left out."""
    variants, notes = [], []
    if config.also_control is not None and config.also_control != config.control:
        title = CONTROLS[config.also_control].title
        variants += [Variant(c, config.also_control, config.massive, f"vs {title}") for c in ids]
    if config.outlier_rows and config.massive != SPARED:
        if template.stats is None:
            notes.append("This template has no capture statistics, so no component has a row without its "
                         "massive-activation channels. Rebuild the template with this fnweb to add them.")
        else:
            variants += [Variant(c, config.control, SPARED, "without massive channels") for c in ids
                         if template.stats.massive_in(template.components[c])]
    return variants, notes


def dose_controls(template: Template, config: ExperimentConfig) -> tuple[list[str], list[str]]:
    """The dose-response's controls (those needing statistics only when the template has them), and notes."""
    if config.dose_component is None:
        return [], []
    template.check_components([config.dose_component])
    usable = [c for c in config.dose_controls if template.stats is not None or not CONTROLS[c].needs_stats]
    if not usable:
        require(None, f"The dose-response against the {' and '.join(config.dose_controls)} control")
    left = [c for c in config.dose_controls if c not in usable]
    notes = [f"The dose-response has no {' or '.join(left)} control: this template has no capture statistics "
             "(rebuild it with this fnweb to add them)."] if left else []
    return usable, notes


def spill_notes(template: Template, specs: Sequence[MaskSpec]) -> list[str]:
    """Say how many of the magnitude-matched twins' channels came from a neighbouring stratum (first draws)."""
    notes = []
    for spec in specs:
        if spec.random_seed is None or not CONTROLS[spec.control].needs_stats:
            continue
        try:
            missed = spilled(template, spec)
        except FnwebError:
            continue  # a twin that cannot be drawn is reported where it is measured
        if missed:
            notes.append(f"Components {','.join(map(str, spec.components))}: {missed} of the magnitude-matched "
                         "control's channels came from the nearest stratum of scale (too few of their own scale "
                         "outside the network in some layer).")
    return notes


def dose_share_spec(config: ExperimentConfig) -> Optional[MaskSpec]:
    """The dose's component removed (for its share of channels, the same at every factor)."""
    if config.dose_component is None:
        return None
    return MaskSpec((int(config.dose_component),), DEFAULT_INTERVENTION, massive=config.massive)
