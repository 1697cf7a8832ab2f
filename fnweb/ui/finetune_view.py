"""What the Fine-tune tab shows about runs: progress, the loss chart, the results table, learning vs forgetting.

Pure formatting of what a run leaves on disk (``RunInfo`` and the events of its
``metrics.jsonl``) into HTML, Plotly figures and tables; no Gradio and no model work.

- Progress: the phase before training, then step s of T with the loss, time left
  and tokens/s, then the final message (finished, stopped or failed, as recorded).
- Loss chart: the training loss of every step and the validation loss at its
  intervals, drawn from the first step.
- Learning vs forgetting: one point per run, x = KL divergence of the trained model
  from the base model on general held-out prompts (forgetting), y = how much the task
  loss fell, in % of where it started (learning); colour = mask mode, so plain LoRA,
  lesion, preserve and the random control compare at a glance.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import pandas as pd
import plotly.graph_objects as go

from ..finetune import RunInfo
from ..finetune.config import NO_MASK, RANDOM
from ..interventions import DEFAULT_INTERVENTION, INTERVENTIONS
from ..metrics import METRICS
from .render import esc, message_html, seconds
from .theme import COLUMN_COLOURS

MODE_TITLES = {NO_MASK: "plain LoRA", **{name: name for name in INTERVENTIONS}, RANDOM: "random control"}
MODE_COLOURS = {NO_MASK: COLUMN_COLOURS["baseline"], **{name: COLUMN_COLOURS[name] for name in INTERVENTIONS},
                RANDOM: COLUMN_COLOURS["random"]}
TRAIN_COLOUR, EVAL_COLOUR = "#4f46e5", "#f59e0b"
_FONT = dict(family="Inter, system-ui, sans-serif", size=13)
TABLE_HEADERS = ["run", "mask", "state", "steps", "task loss before", "task loss after", "learning (loss drop)",
                 "forgetting (KL from base)", "perplexity after (base)"]


def _figure(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)), font=_FONT, height=height,
                      margin=dict(l=72, r=20, t=48, b=50), plot_bgcolor="white", paper_bgcolor="white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    fig.update_xaxes(showgrid=True, gridcolor="#eef2f7", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eef2f7", zeroline=False)
    return fig


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(color="#64748b", size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ---- one run ----------------------------------------------------------------------------


def steps_of(events: Sequence[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "step"]


def loss_figure(events: Sequence[dict], run_id: Optional[str] = None) -> go.Figure:
    """Training loss per step and validation loss at its intervals."""
    steps = steps_of(events)
    evals = [e for e in events if e.get("event") == "eval"]
    fig = go.Figure()
    title = "Loss" + (f" · {run_id}" if run_id else "")
    if not steps:
        text = "The loss appears here from the first step." if run_id else "Start a run to see its loss."
        return _empty(_figure(fig, title, 300), text)
    fig.add_scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines+markers",
                    name="train loss", line=dict(color=TRAIN_COLOUR, width=2), marker=dict(size=5),
                    hovertemplate="step %{x}<br>train loss %{y:.4f}<extra></extra>")
    if evals:
        fig.add_scatter(x=[e["step"] for e in evals], y=[e["eval_loss"] for e in evals], mode="lines+markers",
                        name="eval loss (validation)", line=dict(color=EVAL_COLOUR, width=2, dash="dash"),
                        marker=dict(size=8, symbol="diamond"),
                        hovertemplate="step %{x}<br>eval loss %{y:.4f}<extra></extra>")
    total = steps[-1].get("total") or steps[-1]["step"]
    fig.update_xaxes(title="step", range=[0.5, max(total, 2) + 0.5])
    fig.update_yaxes(title="loss per response token")
    return _figure(fig, title, 300)


def progress_html(info: RunInfo, events: Sequence[dict], now: Optional[float] = None) -> str:
    """A bar while the run trains; its final message once it has ended."""
    if info.state != "running":
        return final_html(info)
    now = time.time() if now is None else now
    elapsed = now - events[0]["time"] if events else 0.0
    steps = steps_of(events)
    last = events[-1] if events else {}
    title = f"Fine-tuning {info.run_id}"
    if not steps:
        return _bar(title, _phase(last, info), 0.0, [f"{seconds(elapsed)} elapsed"], busy=True)
    step = steps[-1]
    evals = [e for e in events if e.get("event") == "eval"]
    label = f"Step {step['step']} of {step['total']} · loss {step['loss']:.4f}"
    if evals:
        label += f" · eval {evals[-1]['eval_loss']:.4f}"
    if last.get("event") == "phase" and last.get("phase") == "evaluating":
        return _bar(title, "Measuring learning and forgetting after training", 1.0,
                    [f"{step['step']} steps done", f"{seconds(elapsed)} elapsed"], busy=True)
    left = max(0.0, step.get("seconds_left", 0.0) - (now - step.get("time", now)))
    detail = [f"about {seconds(left)} left" if step["step"] < step["total"] else "saving the adapter",
              f"{step.get('tokens_per_s', 0):,.0f} tokens/s", f"{seconds(elapsed)} elapsed"]
    return _bar(title, label, step["step"] / max(step["total"], 1), detail, busy=False)


def _phase(last: dict, info: RunInfo) -> str:
    """What a run does before its first step, from its latest event."""
    if last.get("event") == "start":
        return "Attaching the LoRA adapter"
    if last.get("event") == "figures":
        return "Running the first step"
    return last.get("message") or info.message or "Preparing"


def _bar(title: str, label: str, fraction: float, detail: list[str], busy: bool) -> str:
    pct = f"{100 * min(1.0, max(0.0, fraction)):.1f}%"
    return (
        f'<div class="fn-progress" role="progressbar" aria-valuenow="{pct[:-1]}">'
        f'<div class="fn-progress-head"><b>{esc(title)}</b><span>{esc(label)}</span></div>'
        f'<div class="fn-bar{" fn-busy" if busy else ""}"><div style="width:{pct}"></div></div>'
        f'<div class="fn-progress-detail">{esc(" · ".join(detail))}</div></div>'
    )


def final_html(info: RunInfo) -> str:
    """The message of a run that has ended (or of one that will not run)."""
    if info.state == "failed":
        return message_html("error", f"Run {info.run_id} failed: {info.message}")
    figures = _figures_text(info)
    if info.state == "stopped":
        return message_html("stopped", f"Run {info.run_id}: {info.message}" + (f" {figures}" if figures else ""))
    return message_html("ok", f"Run {info.run_id}: {info.message}" + (f" {figures}" if figures else ""))


def _figures_text(info: RunInfo) -> str:
    row = info.row()
    parts = []
    if row["task_loss_before"] is not None and row["task_loss_after"] is not None:
        parts.append(f"task loss {row['task_loss_before']:.3f} → {row['task_loss_after']:.3f}")
    if row["kl_after"] is not None:
        parts.append(f"KL from the base {METRICS['kl'].format(row['kl_after'])}")
    return ("Learning and forgetting: " + "; ".join(parts) + ".") if parts else ""


# ---- all of a visitor's runs ---------------------------------------------------------------


def mask_text(info: RunInfo) -> str:
    """Short words for a run's mask: 'lesion 0,3 · restricted', 'random (preserve) 1', 'none'."""
    c = info.config
    mode = c.get("mask_mode", NO_MASK)
    if mode == NO_MASK:
        return NO_MASK
    ids = ",".join(str(i) for i in c.get("component_ids", []))
    what = f"random ({c.get('control_of', DEFAULT_INTERVENTION)}) {ids}" if mode == RANDOM else f"{mode} {ids}"
    what += " · on the fly" if not c.get("template_path") else ""
    return what + (" · restricted" if c.get("restrict_updates") else "")


def learning(info: RunInfo) -> Optional[float]:
    row = info.row()
    if row["task_loss_before"] is None or row["task_loss_after"] is None:
        return None
    return row["task_loss_before"] - row["task_loss_after"]


def runs_frame(infos: Sequence[RunInfo]) -> pd.DataFrame:
    """One row per run, newest first."""
    loss, kl, ppl = METRICS["ce"], METRICS["kl"], METRICS["ppl"]  # the task loss is a cross-entropy
    rows = []
    for info in infos:
        row = info.row()
        perplexity = ("—" if row["ppl_after"] is None
                      else f"{ppl.format(row['ppl_after'])} ({ppl.format(row['ppl_base'])})")
        steps = f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step)
        drop = loss.format(learning(info)) + ("" if learning(info) is None else f" ({relative_learning(info):.0f} %)")
        rows.append([info.run_id, mask_text(info), info.state, steps, loss.format(row["task_loss_before"]),
                     loss.format(row["task_loss_after"]), drop, kl.format(row["kl_after"]), perplexity])
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def relative_learning(info: RunInfo) -> Optional[float]:
    """The task loss's fall as a percentage of where it started (masks start from very different losses)."""
    drop, before = learning(info), info.row()["task_loss_before"]
    return None if drop is None or not before else 100.0 * drop / before


def scatter_figure(infos: Sequence[RunInfo]) -> go.Figure:
    """Learning (y: % fall of the task loss) against forgetting (x: KL from the base), one point per run.

    The KL axis is logarithmic when every run has a positive KL: a plain LoRA run moves
    the model by hundredths, a mask by units, and both must be readable side by side.
    """
    measured = [i for i in infos if learning(i) is not None and i.row()["kl_after"] is not None]
    fig = go.Figure()
    if not measured:
        return _empty(_figure(fig, "", 340), "Each finished run appears here: up = learned more, "
                                             "left = forgot less.")
    for mode, name in MODE_TITLES.items():
        runs = [i for i in measured if i.config.get("mask_mode", NO_MASK) == mode]
        if not runs:
            continue
        fig.add_scatter(
            x=[i.row()["kl_after"] for i in runs], y=[relative_learning(i) for i in runs], mode="markers", name=name,
            text=[i.run_id for i in runs],
            marker=dict(color=MODE_COLOURS[mode], size=14, line=dict(color="white", width=1.5),
                        symbol=["diamond" if i.config.get("restrict_updates") else "circle" for i in runs]),
            customdata=[[mask_text(i), i.state, i.step, learning(i), i.row()["task_loss_before"],
                         i.row()["task_loss_after"]] for i in runs],
            hovertemplate="%{text}<br>mask %{customdata[0]} (%{customdata[1]}, %{customdata[2]} steps)<br>"
                          "learning: task loss %{customdata[4]:.3f} → %{customdata[5]:.3f} (%{y:.1f} %)<br>"
                          "forgetting: KL from base %{x:.4f}<extra></extra>",
        )
    log = all(i.row()["kl_after"] > 0 for i in measured)
    fig.add_hline(y=0, line=dict(color="#cbd5e1", width=1))
    fig.update_xaxes(title="forgetting: KL from the base model" + (" (log scale)" if log else "") + " · left = less",
                     type="log" if log else "linear", dtick=1 if log else None)  # log: label the decades
    fig.update_yaxes(title="learning: task loss fell by (%)", ticksuffix=" %")
    restricted = any(i.config.get("restrict_updates") for i in measured)
    return _figure(fig, "◆ = restricted updates" if restricted else "", 340)


def run_label(info: RunInfo) -> str:
    return f"{info.run_id} · {info.state} · {mask_text(info)}"
