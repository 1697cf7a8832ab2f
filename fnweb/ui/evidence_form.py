"""The Experiments tab's evidence controls: intervention, α, controls, template seeds, recurrence, task, dose.

``build_evidence_form`` adds the controls (inside an accordion, their choices read from
the tables in ``fnweb.interventions``, ``fnweb.controls`` and ``fnweb.tasks``; ``DEFAULTS``
their starting values) and gives them by field name for a tab's ``Form`` (``named``);
``evidence_from_form`` reads their values into the ``ExperimentConfig`` fields, the
number of template seeds and the recurrence config (or None), each bad value named in
its error. It knows nothing about running them (``fnweb.evidence_run``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import gradio as gr

from ..controls import CONTROLS, DEFAULT_CONTROL, controls_help
from ..errors import FnwebError
from ..interventions import ALPHA_RANGE, DEFAULT_INTERVENTION, INTERVENTIONS
from ..recurrence import RecurrenceConfig
from ..tasks import TASKS
from ..template_seeds import MAX_SEEDS
from .forms import real, whole

NONE = "none"
ACTING = [name for name, i in INTERVENTIONS.items() if i.acts_on_network]  # what a row may do to its component
# Each control's value as the page starts (also what a record without it, an older link or client, means).
DEFAULTS = dict(intervention=DEFAULT_INTERVENTION, alpha=1.0, control=DEFAULT_CONTROL, also_control=NONE,
                template_seeds=1, recurrence=False, task=NONE, dose_component="")


@dataclass
class EvidenceForm:
    intervention: gr.Dropdown
    alpha: gr.Slider
    control: gr.Radio
    also_control: gr.Dropdown
    template_seeds: gr.Number
    recurrence: gr.Checkbox
    task: gr.Dropdown
    dose_component: gr.Textbox

    @property
    def inputs(self) -> list:
        """In the order ``evidence_from_form`` takes them."""
        return [self.intervention, self.alpha, self.control, self.also_control, self.template_seeds,
                self.recurrence, self.task, self.dose_component]

    def named(self) -> dict:
        """The controls by field name (the names ``evidence_from_form`` takes), for a tab's ``Form``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_evidence_form() -> EvidenceForm:
    with gr.Accordion("Evidence options: intervention, controls, template seeds, recurrence, task, dose-response",
                      open=False, elem_id="fn-exp-evidence"):
        with gr.Row():
            intervention = gr.Dropdown(ACTING, value=DEFAULTS["intervention"], label="Each row's intervention",
                                       info=" · ".join(f"{n}: {INTERVENTIONS[n].help}" for n in ACTING),
                                       elem_id="fn-exp-intervention")
            alpha = gr.Slider(*ALPHA_RANGE, value=DEFAULTS["alpha"], step=0.05, label="α (scale)",
                              info="0 zeroes the neurons, 1 leaves them, above 1 amplifies", elem_id="fn-exp-alpha")
        with gr.Row():
            control = gr.Radio(list(CONTROLS), value=DEFAULTS["control"], label="Random neurons matched on",
                               info=controls_help(), elem_id="fn-exp-control")
            also = gr.Dropdown([NONE, *CONTROLS], value=DEFAULTS["also_control"], label="Also against (variant rows)",
                               elem_id="fn-exp-also")
        with gr.Row():
            seeds = gr.Number(DEFAULTS["template_seeds"], label=f"Template seeds (1-{MAX_SEEDS})", precision=0,
                              info="more than 1: rebuild the template with other seeds, test each component "
                                   "across them (Fisher, Holm)", elem_id="fn-exp-template-seeds")
            recurrence = gr.Checkbox(DEFAULTS["recurrence"], label="Recurrence per sample (per-sample ICA, IoU > 0.2)",
                                     elem_id="fn-exp-recurrence")
        with gr.Row():
            task = gr.Dropdown([NONE, *TASKS], value=DEFAULTS["task"], label="Task accuracy",
                               info=" · ".join(f"{t.name}: {t.description}" for t in TASKS.values()),
                               elem_id="fn-exp-task")
            dose = gr.Textbox(DEFAULTS["dose_component"], label="Dose-response component (blank: none)",
                              placeholder="e.g. 5",
                              info="that component scaled by α from 0 to 2 against its random twins",
                              elem_id="fn-exp-dose")
    return EvidenceForm(intervention, alpha, control, also, seeds, recurrence, task, dose)


def evidence_from_form(intervention, alpha, control, also_control, template_seeds, recurrence, task,
                       dose_component) -> tuple[dict, int, bool]:
    """The ``ExperimentConfig`` fields, the number of template seeds, and whether to run recurrence."""
    if intervention not in ACTING:
        raise FnwebError(f"Unknown intervention '{intervention}'; choose {' or '.join(ACTING)}.")
    takes_alpha = INTERVENTIONS[intervention].takes_alpha
    dose = str(dose_component or "").strip()
    fields = dict(
        intervention=intervention, alpha=real(alpha, "α") if takes_alpha else None,
        control=str(control or DEFAULT_CONTROL),
        also_control=None if also_control in (None, "", NONE) else also_control,
        task=None if task in (None, "", NONE) else str(task),
        dose_component=whole(dose, "Dose-response component") if dose else None,
    )
    return fields, whole(template_seeds, "Template seeds"), bool(recurrence)


def recurrence_for(config, wanted: bool) -> Optional[RecurrenceConfig]:
    """Per-sample recurrence on the experiment's held-out prompts, with its seed and lengths (None: not wanted)."""
    if not wanted:
        return None
    samples = config.samples_per_dataset or RecurrenceConfig.samples_per_dataset  # 0 (all): the default
    return RecurrenceConfig(sources=list(config.sources), samples_per_dataset=samples,
                            max_tokens=config.max_tokens, seed=config.seed,
                            exclude_template_prompts=config.exclude_template_prompts)
