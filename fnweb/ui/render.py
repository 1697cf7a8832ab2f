"""What the page shows, as HTML strings and tables: progress, messages, comparison columns, metrics, experiments.

Pure formatting of engine objects (``Progress``, ``Comparison``, ``Template``, ``ExperimentResult``); no
Gradio and no model work here, so every function is easy to test and to reuse.
The CSS classes used here are defined in ``fnweb.ui.theme``.
"""

from __future__ import annotations

import html
from typing import Optional

import pandas as pd

from ..compare import BASELINE, RANDOM, RANDOM_OF, Comparison
from ..experiment_results import ExperimentResult
from ..experiment_tables import curve_table, lesion_table
from ..interventions import INTERVENTIONS
from ..metrics import METRICS, TOKEN_METRICS
from ..progress import Progress
from ..templates import Template
from ..verdicts import CLOSE, HEADLINE, SIGMAS, verdicts

# A build's phases: where each sits on the overall bar (start, end), for a bar that never runs backwards, and
# its step of four. Other jobs have no table: their bar is the current phase's own fraction.
PHASE_SPAN = {"loading": (0.0, 0.03), "capturing": (0.03, 0.75), "decomposing": (0.75, 0.98),
              "thresholding": (0.98, 1.0), "done": (1.0, 1.0)}
PHASE_STEP = {"loading": 1, "capturing": 2, "decomposing": 3, "thresholding": 4, "done": 4}
BUILD_PHASES = (PHASE_SPAN, PHASE_STEP)
NO_PHASES: tuple[dict, dict] = ({}, {})
COLUMN_TITLES = {BASELINE: "Baseline", **{i.name: i.title for i in INTERVENTIONS.values()},
                 **{c: "Random control" + ("" if c == RANDOM else f" ({n})") for c, n in RANDOM_OF.items()},
                 "run": "Fine-tuned run"}
COLUMN_HELP = {
    BASELINE: "the unchanged model",
    **{i.name: i.help for i in INTERVENTIONS.values()},
    RANDOM: "as many random neurons zeroed, per layer",
    **{c: "as many random neurons kept, per layer; the rest zeroed" for c, n in RANDOM_OF.items()
       if not INTERVENTIONS[n].acts_on_network},
    "run": "a fine-tuned run (LoRA adapter), with the mask it was trained with",
}
COMPARE_DIGITS = 3  # a side-by-side of short texts: more decimals would be noise


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def seconds(value: float) -> str:
    value = max(0.0, value)
    return f"{value:.0f} s" if value < 90 else f"{value // 60:.0f} min {value % 60:02.0f} s"


# ---- progress and messages --------------------------------------------------------


def progress_html(event: Optional[Progress], elapsed: float, title: str = "Building the template",
                  waiting=None, started: bool = True, phases: tuple[dict, dict] = BUILD_PHASES) -> str:
    """A bar with what the job is doing now: waiting (and its place in the line), or its phase, the work done,
    the time left in the phase and the time elapsed.

    ``waiting`` is a ``fnweb.ui.jobs.Waiting`` (or True: waiting, place unknown); ``started`` False means the job
    has not yet been told whether it must wait. ``phases`` places each phase on the bar (a build's by default).
    """
    if waiting:
        return _bar_html(title, waiting_text(waiting), 0.0, elapsed, "", busy=True)
    if event is None:
        return _bar_html(title, "Running" if started else "Queued", 0.0, elapsed, "", busy=True)
    spans, steps = phases
    start, end = spans.get(event.phase, (0.0, 1.0))
    overall = start + (end - start) * event.fraction
    step = steps.get(event.phase)
    label = (f"Step {step} of {max(steps.values())} · " if step else "") + (event.message or event.phase)
    detail = event.describe()
    if detail.startswith(event.message or event.phase):
        detail = detail[len(event.message or event.phase):].lstrip(": ,")
    # The phases without steady events (reading prompts, PCA, ICA) get a moving stripe to show life.
    return _bar_html(title, label, overall, elapsed, detail, busy=not event.unit or event.phase == "decomposing")


def waiting_text(waiting) -> str:
    """Why a job waits, with its place in the line when known."""
    position = getattr(waiting, "position", None)
    place = f" (position {position})" if position else ""
    if getattr(waiting, "reason", "model") == "slots":
        n = waiting.slots
        return f"Waiting for a free slot: the server runs {n} model job{'s' if n != 1 else ''} at once{place}"
    return f"Waiting for another job on this model{place}"


def _bar_html(title: str, label: str, fraction: float, elapsed: float, detail: str, busy: bool) -> str:
    pct = f"{100 * min(1.0, max(0.0, fraction)):.1f}%"
    parts = [esc(detail)] if detail else []
    parts.append(f"{seconds(elapsed)} elapsed")
    return (
        f'<div class="fn-progress" role="progressbar" aria-valuenow="{pct[:-1]}">'
        f'<div class="fn-progress-head"><b>{esc(title)}</b><span>{esc(label)}</span></div>'
        f'<div class="fn-bar{" fn-busy" if busy else ""}"><div style="width:{pct}"></div></div>'
        f'<div class="fn-progress-detail">{" · ".join(parts)}</div></div>'
    )


def message_html(kind: str, text: str) -> str:
    """A coloured note: kind is ok | error | stopped | info."""
    icon = {"ok": "✓", "error": "⚠", "stopped": "■", "info": "ℹ"}.get(kind, "")
    return f'<div class="fn-msg fn-msg-{kind}"><span class="fn-msg-icon">{icon}</span>{esc(text)}</div>'


# ---- templates ---------------------------------------------------------------------


def coverage_frame(template: Template) -> pd.DataFrame:
    """Per component: size, spread, where it peaks, and (when recorded) its share of the variance."""
    rows = template.coverage()
    variance = (template.meta.ica.get("explained_variance") if template.meta else None) or []
    frame = pd.DataFrame({
        "component": [r["component"] for r in rows],
        "neurons": [r["channels"] for r in rows],
        "% all": [f"{100 * r['share']:.2f}" for r in rows],
        "layers": [r["layers"] for r in rows],
        "peak layer": [_peak(template, r["component"]) for r in rows],
    })
    if variance and len(variance) == len(rows) and template.meta.standardise:
        # Standardised channels have unit variance, so the total is the number of channels.
        frame["% var"] = [f"{100 * v / template.total_channels():.2f}" for v in variance]
    if rows and all("stability" in r for r in rows):
        # Matched |correlation| and mask IoU over ICA re-runs on resampled tokens (1: found every time).
        frame["stability"] = [f"{r['stability']:.2f} / {r['mask_stability']:.2f}" for r in rows]
    if any(r.get("massive") for r in rows):  # channels orders above their layer's scale (fnweb.channel_stats)
        frame["massive"] = [", ".join(f"L{layer}#{ch}" for layer, ch in r.get("massive", [])) for r in rows]
    return frame


def _peak(template: Template, component: int) -> str:
    per_layer = template.components[component]
    if not per_layer:
        return "—"
    layer = max(per_layer, key=lambda index: len(per_layer[index]))
    return f"{layer} ({len(per_layer[layer])})"


def template_summary(name: str, template: Template, origin: str) -> str:
    """Markdown: what the template is and how it was made."""
    m = template.meta
    head = f"**{name}** ({origin}): {len(template.components)} components over {len(template.layers)} layers " \
           f"x {template.width:,} channels"
    if m is None:
        return head + ". No fnweb metadata (a file from the original tool): its site is inferred when used."
    sources = ", ".join(f"{d['name']} ({d.get('samples', '?')})" for d in m.datasets) or "?"
    return (
        f"{head}.  \nModel `{m.model_id}` · site `{m.site}` · k {m.k} · threshold {m.threshold} "
        f"{m.threshold_value:g} · {m.n_tokens:,} tokens · seed {m.seed}  \nPrompts: {sources}"
    )


# ---- comparison --------------------------------------------------------------------


def columns_html(comparison: Optional[Comparison], settings_note: str = "") -> str:
    """The columns side by side; the text from where a column departs from the baseline is marked."""
    if comparison is None:
        return '<div class="fn-empty">Choose a prompt and components, then press <b>Generate</b>.</div>'
    found = verdicts(comparison, RANDOM_OF) if comparison.done else {}
    cards = "".join(_card(col, comparison.done, found.get(col.name)) for col in comparison.columns)
    state = "done" if comparison.done else f"generating · token {comparison.step}"
    note = f" · {esc(settings_note)}" if settings_note else ""
    return (
        f'<div class="fn-compare"><div class="fn-prompt"><span>Prompt</span>{esc(comparison.prompt)}'
        f'<em>{state}{note}</em></div><div class="fn-columns">{cards}</div></div>'
    )


def _card(col, done: bool, verdict=None) -> str:
    title = COLUMN_TITLES.get(col.name, col.name)
    share = f"{100 * col.masked_share:.2f} % of neurons masked" if col.name != BASELINE else "no mask"
    if col.name == BASELINE:
        body, foot = esc(col.text), f"{len(col.tokens)} tokens"
    else:
        body = esc(col.prefix) + (f'<mark class="fn-depart">{esc(col.rest)}</mark>' if col.rest else "")
        foot = ("same as the baseline so far" if col.departs_at is None
                else f"departs from the baseline at token {col.departs_at}")
    cursor = "" if done else '<span class="fn-cursor"></span>'
    if done and not col.tokens[:-1] and not col.text.strip():
        body = '<span class="fn-none">(no text: the model ended its answer at once)</span>'
    label = col.label if col.draws < 2 else f"{col.label} (first of {col.draws} draws shown)"
    return (
        f'<div class="fn-card fn-col-{esc(col.name)}"><div class="fn-card-head"><b>{esc(title)}</b>'
        f'<span>{esc(label)}</span><span>{share}</span></div>'
        f'<div class="fn-text">{body}{cursor}</div>{_other_draws(col)}{_verdict_html(verdict)}'
        f'<div class="fn-card-foot">{esc(foot)}</div></div>'
    )


def _other_draws(col) -> str:
    """Every other draw of a random control, each behind its own summary (the first is the card's text)."""
    if not col.draw_texts:
        return ""
    items = "".join(f'<details class="fn-draw"><summary>Draw {i}</summary><div class="fn-text">'
                    f'{esc(text) or "<span class=fn-none>(no text)</span>"}</div></details>'
                    for i, text in enumerate(col.draw_texts, start=2))
    return f'<div class="fn-draws">{items}</div>'


def _verdict_html(verdict) -> str:
    """The column's 'x times random' line and its plain verdict."""
    if verdict is None:
        return ""
    return f'<div class="fn-verdict fn-verdict-{verdict.word.split()[0]}">{esc(verdict.line())}</div>'


def metrics_frame(comparison: Optional[Comparison]) -> pd.DataFrame:
    """One row per column, one column per per-token metric; the random control shows mean ± spread over its draws."""
    headers = ["column", "masked", "share masked", *(METRICS[key].label for key in TOKEN_METRICS), "departs at token",
               "vs random"]
    if comparison is None or not comparison.done:
        return pd.DataFrame(columns=headers)
    rows, found = [], verdicts(comparison, RANDOM_OF)
    for col in comparison.columns:
        draws = f" ({col.draws} draws)" if col.draws > 1 else ""
        numbers = [_shown(METRICS[key], col.metrics.get(key)) for key in TOKEN_METRICS]
        rows.append([
            COLUMN_TITLES.get(col.name, col.name) + draws,
            col.label,
            f"{100 * col.masked_share:.2f} %",
            *numbers,
            "—" if col.name == BASELINE else ("never" if col.departs_at is None else str(col.departs_at)),
            found[col.name].line() if col.name in found else "",
        ])
    return pd.DataFrame(rows, columns=headers)


def metrics_legend() -> str:
    """Markdown: what every header of the metrics table means (from the metric table), and the verdict's rule."""
    items = [f"**{METRICS[key].label}** ({METRICS[key].unit or 'share'}; {METRICS[key].better} is better): "
             f"{METRICS[key].help}." for key in TOKEN_METRICS]
    items += [
        "**column**: what was generated (a random control's numbers are the mean ± spread of its draws); "
        "**masked**: which neurons; **share masked**: of all the model's neurons at the site.",
        "**departs at token**: the first token where the column's text differs from the baseline's.",
        f"**vs random**: the column's {METRICS[HEADLINE].label} as a multiple of its random control's, and whether "
        f"it is larger, smaller or indistinguishable (within {SIGMAS:g} standard deviations of the draws, or within "
        f"a factor {CLOSE:g}).",
    ]
    return "\n".join(f"- {item}" for item in items)


def _shown(metric, stat) -> str:
    if stat is None:
        return ""
    return metric.format(stat.mean, stat.sd, digits=min(metric.digits, COMPARE_DIGITS), missing="")


# ---- experiments -------------------------------------------------------------------


def _named(component, labels: Optional[dict]) -> str:
    """A component id with its card's label, when the template has cards."""
    label = (labels or {}).get(int(component)) if str(component).isdigit() else None
    return f"{component} · {label}" if label else str(component)


def lesion_frame(result: Optional[ExperimentResult], labels: Optional[dict] = None) -> pd.DataFrame:
    """The lesion table of an experiment (partial or final); components named by their card's label."""
    headers, rows = lesion_table(result)
    return pd.DataFrame([[_named(row[0], labels), *row[1:]] for row in rows], columns=headers)


def curve_frame(result: Optional[ExperimentResult]) -> pd.DataFrame:
    headers, rows = curve_table(result)
    return pd.DataFrame(rows, columns=headers)
