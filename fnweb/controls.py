"""Random controls: how a network's random twin is drawn (the table of controls), its seeds, and massive channels.

A random control replaces a network's channels by as many channels per layer drawn
(seeded) from outside it. ``CONTROLS`` holds one record per way of drawing:

- **layer**: uniformly from the rest of the layer (same count per layer);
- **magnitude**: also matched on each channel's activation scale (``fnweb.channel_stats``):
  the layer's channels fall into ``STRATA`` quantile bins of their scale, and each bin
  gives as many channels as the network has in it. Where a bin has too few channels
  outside the network, the shortfall comes from the nearest bins (the larger scale first
  on a tie, so the control is not the weaker one) and is counted (``Drawn.spilled``).

``MASSIVE`` is the table of what happens to massive-activation channels: treated like
any other (**keep**), never drawn for a control (**undrawn**), or left alone everywhere,
dropped from the network's channels too (**spared**: a component "without its outlier
channels").

Seeds: draw ``d`` of an experiment with seed ``s`` (on a template of build seed ``t``, its
stream) uses ``draw_seed(s, d, t)``, from ``numpy.random.SeedSequence([s, t, d])``, so draws
of seed s+1 share nothing with those of seed s (adding d to s made them reuse all draws but one). It knows nothing about
templates, masks or models: callers pass each layer's chosen channels, the channels
excluded from draws and the scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .errors import FnwebError

STRATA = 10  # quantile bins of a layer's channel scales (deciles)

# rng, the layer's chosen channels, the pool to draw from, each channel's scale (None: not needed)
# -> (drawn channels, how many came from outside their own stratum)
LayerDraw = Callable[[np.random.Generator, np.ndarray, np.ndarray, Optional[np.ndarray]], tuple[np.ndarray, int]]


@dataclass(frozen=True)
class Control:
    """One way of drawing a random control."""

    name: str
    title: str  # for people: a legend or a column title
    needs_stats: bool  # needs the template's capture statistics (the channels' scales)
    help: str  # one line for people: what it matches
    draw: LayerDraw


@dataclass(frozen=True)
class MassivePolicy:
    """What a mask does with massive-activation channels (``fnweb.channel_stats``)."""

    name: str
    from_draws: bool  # never drawn for a random control
    from_network: bool  # dropped from the network's channels (left alone)
    help: str


@dataclass
class Drawn:
    """A control's channels per layer, and how many were drawn outside their own magnitude stratum."""

    channels: dict[int, np.ndarray]
    spilled: int = 0


def _uniform(rng: np.random.Generator, chosen: np.ndarray, pool: np.ndarray, _scale) -> tuple[np.ndarray, int]:
    return rng.choice(pool, size=len(chosen), replace=False), 0


def strata_of(scale: np.ndarray, strata: int = STRATA) -> np.ndarray:
    """Each channel's stratum (0 = smallest scale) among quantile bins of its layer's scales."""
    edges = np.quantile(scale, np.linspace(0.0, 1.0, strata + 1)[1:-1])
    return np.searchsorted(edges, scale, side="right")


def _by_magnitude(rng: np.random.Generator, chosen: np.ndarray, pool: np.ndarray,
                  scale: np.ndarray) -> tuple[np.ndarray, int]:
    """As many channels per stratum as ``chosen`` has there; a shortfall from the nearest strata."""
    stratum = strata_of(scale)
    short = np.bincount(stratum[chosen], minlength=STRATA)
    left = [pool[stratum[pool] == b] for b in range(STRATA)]
    drawn, spilled = [], 0
    # Every stratum from itself first; then each shortfall from the nearest strata, the larger scale on a tie.
    pairs = [(b, b) for b in range(STRATA)] + [
        (own, b) for own in range(STRATA) for b in sorted(range(STRATA), key=lambda o: (abs(o - own), -o)) if b != own]
    for own, b in pairs:
        take = min(int(short[own]), len(left[b]))
        if take:
            picked = rng.choice(left[b], size=take, replace=False)
            left[b] = np.setdiff1d(left[b], picked, assume_unique=True)
            drawn.append(picked)
            short[own] -= take
            spilled += take if b != own else 0
    return np.concatenate(drawn) if drawn else np.empty(0, dtype=np.int64), spilled


CONTROLS: dict[str, Control] = {
    "layer": Control("layer", "same count per layer", False, "as many channels per layer, drawn from the rest",
                     _uniform),
    "magnitude": Control("magnitude", "same count and scale per layer", True,
                         "as many channels per layer and per decile of activation scale (root mean square), drawn "
                         "from the rest", _by_magnitude),
}
DEFAULT_CONTROL = "layer"

MASSIVE: dict[str, MassivePolicy] = {
    "keep": MassivePolicy("keep", False, False, "massive-activation channels treated like any other"),
    "undrawn": MassivePolicy("undrawn", True, False, "massive-activation channels never drawn for a random control"),
    "spared": MassivePolicy("spared", True, True, "massive-activation channels left alone: dropped from the "
                            "network's channels and never drawn for a random control"),
}
DEFAULT_MASSIVE = "keep"


def check_choice(value: str, table: dict, what: str) -> str:
    """``value`` when it names an entry of ``table``, else an error listing the entries."""
    if value not in table:
        raise FnwebError(f"Unknown {what} '{value}'; choose {' or '.join(table)}.")
    return value


def draw_seed(seed: int, draw: int, stream: int = 0) -> int:
    """The seed of draw ``draw`` of an experiment seeded ``seed`` on stream ``stream``: no two triples share one."""
    if min(int(seed), int(draw), int(stream)) < 0:
        raise FnwebError(f"Seeds must be whole numbers from 0 up (got seed {seed}, draw {draw}, stream {stream}).")
    return int(np.random.SeedSequence([int(seed), int(stream), int(draw)]).generate_state(1)[0])


def draw_control(selected: dict[int, np.ndarray], width: int, seed: int, control: str = DEFAULT_CONTROL,
                 excluded: Optional[dict[int, np.ndarray]] = None,
                 scale_of: Optional[Callable[[int], np.ndarray]] = None) -> Drawn:
    """Per layer, as many channels as ``selected`` has, drawn by ``control`` from outside it and ``excluded``.

    ``scale_of(layer)`` gives the layer's channel scales (a control that ``needs_stats``).
    The ``layer`` control without exclusions draws what fnweb always drew for a seed, so saved
    runs' random masks are drawn again the same.
    """
    how = CONTROLS[check_choice(control, CONTROLS, "control")]
    rng = np.random.default_rng(seed)
    drawn, spilled = {}, 0
    for layer, chosen in sorted(selected.items()):
        pool = np.setdiff1d(np.arange(width), chosen, assume_unique=True)
        if excluded and layer in excluded:
            pool = np.setdiff1d(pool, excluded[layer], assume_unique=True)
        if len(chosen) > len(pool):
            raise FnwebError(
                f"Layer {layer} has {len(chosen)} selected neurons of {width}: too many for a random "
                f"control drawn from the {len(pool)} left. Choose fewer components or a stricter threshold."
            )
        picked, missed = how.draw(rng, chosen, pool, scale_of(layer) if how.needs_stats else None)
        drawn[layer], spilled = np.sort(picked), spilled + missed
    return Drawn(drawn, spilled)


def controls_help() -> str:
    """Every control and what it matches, for a form or a CLI's help."""
    return " · ".join(f"{c.name}: {c.help}" for c in CONTROLS.values())
