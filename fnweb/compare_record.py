"""A comparison on record: what was asked and what came out, as plain JSON and as Markdown.

``record(setup, comparison)`` joins the setup of a comparison (model, template and how
to find it again, components, columns, prompt, generation settings: plain values) with
its result (``fnweb.compare.Comparison``) into one JSON-ready dict;
``comparison_from_dict`` reads the result back (a saved state, an export), checking its
shape, so a page can show it again without generating. ``markdown(record)`` writes it
for a talk or a lab notebook: the setup, each column's text, and the metrics table.

Fields a newer ``ColumnResult`` has and an older record lacks take their defaults;
fields a record has that this version does not know are left out. It knows nothing
about the web app, browsers or where records are kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, Optional

from .compare import BASELINE, ColumnResult, Comparison
from .errors import FnwebError
from .interventions import INTERVENTIONS
from .metrics import METRICS, TOKEN_METRICS, Stat

FORMAT = "fnweb-comparison"
VERSION = 1
TITLES = {BASELINE: "Baseline", **{i.name: i.title for i in INTERVENTIONS.values()}, "random": "Random control",
          "run": "Fine-tuned run"}


def record(setup: dict, comparison: Comparison) -> dict:
    """The setup and the result as one JSON-ready dict."""
    return {"format": FORMAT, "version": VERSION, "setup": dict(setup), "comparison": comparison_to_dict(comparison)}


def comparison_to_dict(comparison: Comparison) -> dict:
    return asdict(comparison)


def comparison_from_dict(data: Any) -> Comparison:
    """A ``Comparison`` from its dict (``comparison_to_dict``), or a clear error."""
    try:
        columns = [_column(c) for c in data["columns"]]
        return Comparison(prompt=str(data["prompt"]), columns=columns, done=bool(data.get("done", True)),
                          step=int(data.get("step", 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FnwebError(f"Not an fnweb comparison: {exc}.") from exc


def _column(data: dict) -> ColumnResult:
    known = {f.name for f in fields(ColumnResult)}
    values = {key: value for key, value in data.items() if key in known}
    values["metrics"] = {str(key): Stat(_number(s.get("mean")), _number(s.get("sd")))
                         for key, s in (data.get("metrics") or {}).items()}
    values["tokens"] = [int(t) for t in values.get("tokens", [])]
    return ColumnResult(**values)


def _number(value) -> Optional[float]:
    return None if value is None else float(value)


def from_record(data: Any) -> tuple[dict, Comparison]:
    """(setup, comparison) of a record, or a clear error."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FnwebError("Not an fnweb comparison record (its 'format' is not 'fnweb-comparison').")
    if not isinstance(data.get("setup"), dict):
        raise FnwebError("The comparison record has no setup.")
    return data["setup"], comparison_from_dict(data.get("comparison"))


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ---- Markdown ---------------------------------------------------------------------------------


def markdown(data: dict) -> str:
    """The record for people: setup, each column's text, and the metrics (mean ± sd over random draws)."""
    setup, comparison = from_record(data)
    lines = ["# fnweb comparison", "", *_setup_lines(setup), "", "## Prompt", "", _quoted(comparison.prompt), ""]
    for col in comparison.columns:
        draws = f" ({col.draws} draws, the first shown)" if col.draws > 1 else ""
        lines += [f"## {TITLES.get(col.name, col.name)}{draws}", "", f"*{col.label}* · "
                  f"{100 * col.masked_share:.2f} % of neurons masked", "", _quoted(col.text or "(no text)"), ""]
    return "\n".join(lines + _metrics_lines(comparison)) + "\n"


def _setup_lines(setup: dict) -> list[str]:
    settings = setup.get("settings") or {}
    decoding = "greedy" if settings.get("greedy", True) else \
        f"sampled at T {settings.get('temperature')}, seed {settings.get('seed')}"
    template = setup.get("template") or {}
    rows = [("Model", setup.get("model")), ("Template", template.get("name")),
            ("Components", ", ".join(str(c) for c in setup.get("components") or []) or "none"),
            ("Columns", ", ".join(setup.get("columns") or [])),
            ("Decoding", f"{decoding}, at most {settings.get('max_new_tokens')} new tokens, "
                         f"{settings.get('random_draws')} random draws"),
            ("Preserve scope", settings.get("preserve_scope"))]
    return [f"- **{name}**: {_cell(value)}" for name, value in rows if value not in (None, "")]


def _metrics_lines(comparison: Comparison) -> list[str]:
    if not comparison.done:
        return ["*Stopped before the end: no metrics.*"]
    heads = ["column", *(METRICS[key].label for key in TOKEN_METRICS), "departs at token"]
    lines = ["## Metrics (teacher-forced on the baseline's text)", "", "| " + " | ".join(heads) + " |",
             "|" + "---|" * len(heads)]
    for col in comparison.columns:
        numbers = [_stat(key, col.metrics.get(key)) for key in TOKEN_METRICS]
        departs = "—" if col.name == BASELINE else ("never" if col.departs_at is None else str(col.departs_at))
        lines.append("| " + " | ".join([TITLES.get(col.name, col.name), *numbers, departs]) + " |")
    return lines


def _stat(key: str, stat: Optional[Stat]) -> str:
    return "" if stat is None else METRICS[key].format(stat.mean, stat.sd, digits=3, missing="")


def _quoted(text: str) -> str:
    return "\n".join("> " + line for line in str(text).splitlines() or [""])


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
