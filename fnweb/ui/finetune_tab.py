"""The Fine-tune tab: masked LoRA fine-tuning with a live loss chart, and learning vs forgetting of every run.

The form becomes a ``TrainConfig`` (``fnweb.ui.finetune_form``; checked there and by
the engine before anything runs); Start hands it to the server's ``RunPool``
(``fnweb.ui.finetune_runs``), whose ``RunManager`` trains a private copy of the visitor's model in a background thread:
the Start event returns at once, so model work of other visitors keeps its turns in
the shared queue. The page follows the run with a ``gr.Timer`` whose tick
(``poll``) reads the run's events from its folder: progress with time left, the
train and eval loss from the first step, and, once the run has ended, the results
table and the learning-vs-forgetting scatter of all this visitor's runs.

Runs survive a page reload: the browser keeps a random visitor key
(``gr.BrowserState``); the first tick after the page opens finds the visitor's run
folder from it and re-attaches to the running or newest run. The run ids are also kept
in ``session.runs`` for the other tabs (Compare can add a run as a column; Share can
push it). On ZeroGPU the training thread runs without the GPU (only decorated
functions get one); give the Space a dedicated GPU or a CPU to fine-tune there.
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from ..errors import FnwebError
from ..finetune import MASK_MODES, RunInfo
from ..finetune.config import CONTROL_OF, NO_MASK, RANDOM
from ..interventions import DEFAULT_INTERVENTION, interventions_help
from ..models import QUANTIZATIONS
from . import finetune_view as view
from .feedback import action
from .finetune_form import ON_THE_FLY, SOURCES, config_from_form
from .finetune_runs import POOL, attach, check_run_name, refresh_runs
from .forms import Form, Tab, builtin_choices, on
from .render import message_html
from .state import Session

POLL_SECONDS = 1.0
MODE_HELP = (f"{NO_MASK}: plain LoRA · {interventions_help()}, while training · "
             f"{RANDOM}: the same on as many random neurons (the control)")
SCATTER_HELP = ("One point per run: **up** = the task loss fell more (learned more), **left** = closer to the base "
                "model on general prompts (forgot less). Compare a lesion with its random control, and both with "
                "plain LoRA.")
INTRO = ("Fine-tune the loaded model with LoRA while a network is lesioned or preserved, and see what it learns "
         "(task loss on held-out examples) against what it forgets (KL from the base model on general prompts).")


SHOWN = ("visitor", "run", "progress", "loss", "table", "scatter", "view", "timer")  # what poll and start update


def build_finetune_tab(ctx) -> Tab:
    gr.Markdown(INTRO, elem_classes="fn-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=380):
            fields = {**_data_section(), **_network_section(), **_training_section()}
            with gr.Row():
                start_button = gr.Button("Start fine-tuning", variant="primary", elem_id="fn-ft-start")
                stop_button = gr.Button("Stop & save", variant="stop", elem_id="fn-ft-stop")
        with gr.Column(scale=6, min_width=400):
            shown = _progress_section()
    table = gr.Dataframe(view.runs_frame([]), label="Results: task loss on held-out examples of the training set "
                         "(before → after); KL from the base model and perplexity on general prompts",
                         interactive=False, wrap=True, elem_id="fn-ft-results")
    visitor = gr.BrowserState(None, storage_key="fnweb-visitor")
    state = gr.State({})
    timer = gr.Timer(POLL_SECONDS, active=True)  # the first tick re-attaches; it stays on while a run trains
    tab = Tab(Form(**fields), "progress", start=start_button, stop=stop_button, **shown, table=table,
              visitor=visitor, view=state, timer=timer)
    _wire(ctx, tab)
    return tab


def _data_section() -> dict:
    gr.Markdown("#### 1 · Data", elem_classes="fn-step")
    source = gr.Radio(list(SOURCES), value="built-in", label="Dataset from", elem_id="fn-ft-source")
    builtin = gr.Dropdown(builtin_choices(), value="arithmetic", label="Built-in set", elem_id="fn-ft-builtin")
    file = gr.File(label="Dataset file (.json, .jsonl, .csv, .parquet) with prompt/response fields",
                   file_types=[".json", ".jsonl", ".csv", ".parquet"], visible=False, elem_id="fn-ft-file")
    hub = gr.Textbox(label="Hub dataset", placeholder="tatsu-lab/alpaca  or  name, config, split",
                     visible=False, elem_id="fn-ft-hub")
    return dict(source=source, builtin=builtin, file=file, hub=hub)


def _network_section() -> dict:
    gr.Markdown("#### 2 · Network", elem_classes="fn-step")
    with gr.Row():
        template = gr.Dropdown([ON_THE_FLY], value=ON_THE_FLY, label="Template", allow_custom_value=True,
                               scale=3, min_width=200, elem_id="fn-ft-template",
                               info="Yours (Templates tab), or computed from the training prompts")
        components = gr.Textbox("0", label="Components", scale=1, min_width=110, elem_id="fn-ft-components",
                                info="e.g. 0 or 0, 3")
    mode = gr.Radio(list(MASK_MODES), value=NO_MASK, label="Mask mode", info=MODE_HELP, elem_id="fn-ft-mode")
    with gr.Row():
        control_of = gr.Radio(list(CONTROL_OF), value=DEFAULT_INTERVENTION, label="Random control copies",
                              min_width=180, visible=False, elem_id="fn-ft-control")
        restrict = gr.Checkbox(False, label="Restrict updates to the network",
                               info="preserve: only its neurons' weights change; lesion: only the others'",
                               min_width=220, elem_id="fn-ft-restrict")
    with gr.Accordion("Template computed on the fly", open=False):
        with gr.Row():
            k = gr.Number(5, label="Components computed (k)", precision=0, min_width=120)
            ica_samples = gr.Number(100, label="Prompts for the template", precision=0, min_width=120)
    return dict(template=template, components=components, mode=mode, control_of=control_of, restrict=restrict,
                k=k, ica_samples=ica_samples)


def _training_section() -> dict:
    gr.Markdown("#### 3 · Training", elem_classes="fn-step")
    # Numbers, not sliders: a value out of range then gets a message that names the setting.
    with gr.Row():
        steps = gr.Number(30, label="Steps", precision=0, min_width=90, elem_id="fn-ft-steps")
        learning_rate = gr.Number(1e-3, label="Learning rate", min_width=110, elem_id="fn-ft-lr")
        batch_size = gr.Number(4, label="Batch size", precision=0, min_width=90, elem_id="fn-ft-batch")
        grad_accum = gr.Number(1, label="Grad. accumulation", precision=0, min_width=110)
        max_seq_len = gr.Number(256, label="Max seq. length", precision=0, min_width=110, elem_id="fn-ft-max-len")
    with gr.Row():
        lora_r = gr.Number(8, label="LoRA r", precision=0, min_width=80, elem_id="fn-ft-r")
        lora_alpha = gr.Number(16, label="LoRA alpha", min_width=80)
        lora_dropout = gr.Number(0.05, label="LoRA dropout", min_width=90)
        quantization = gr.Radio(list(QUANTIZATIONS), value="none", label="Quantization (QLoRA)",
                                min_width=200, elem_id="fn-ft-quant")
    with gr.Accordion("Evaluation, seed and name", open=False):
        with gr.Row():
            eval_every = gr.Number(None, label="Eval every (steps; blank: ~5 per run; 0: never)", precision=0,
                                   min_width=160, elem_id="fn-ft-eval-every")
            general_per_set = gr.Number(4, label="Forgetting prompts per set", precision=0, min_width=120,
                                        elem_id="fn-ft-general")
            task_examples = gr.Number(32, label="Task examples scored", precision=0, min_width=120,
                                      elem_id="fn-ft-task-examples")
        with gr.Row():
            seed = gr.Number(0, label="Seed", precision=0, min_width=80)
            run_name = gr.Textbox(label="Run name (optional)", placeholder="blank: date-time-mode",
                                  min_width=200, elem_id="fn-ft-name")
    return dict(steps=steps, learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                max_seq_len=max_seq_len, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                quantization=quantization, eval_every=eval_every, general_per_set=general_per_set,
                task_examples=task_examples, seed=seed, run_name=run_name)


def _progress_section() -> dict:
    gr.Markdown("#### 4 · Progress", elem_classes="fn-step")
    run = gr.Dropdown([], value=None, label="Run", allow_custom_value=True, elem_id="fn-ft-run",
                      info="Your runs; they stay here when you reload the page")
    progress = gr.HTML(message_html("info", "Choose data and a mask, then press Start fine-tuning. "
                                            "30 steps on the embedded model take about a minute on a CPU."),
                       elem_id="fn-ft-progress")
    loss = gr.Plot(view.loss_figure([]), label="Loss", show_label=False, elem_id="fn-ft-loss")
    gr.Markdown("#### 5 · Your runs: learning vs forgetting", elem_classes="fn-step")
    gr.Markdown(SCATTER_HELP, elem_classes="fn-note")
    scatter = gr.Plot(view.scatter_figure([]), show_label=False, elem_id="fn-ft-scatter")
    return dict(run=run, progress=progress, loss=loss, scatter=scatter)


def _wire(ctx, tab: Tab) -> None:
    tab.source.change(lambda s: [gr.update(visible=s == name) for name in SOURCES], tab.source,
                      [tab.builtin, tab.file, tab.hub], queue=False, api_visibility="private")
    tab.mode.change(lambda m: gr.update(visible=m == RANDOM), tab.mode, tab.control_of, queue=False,
                    api_visibility="private")
    on(ctx.template.change, template_choices, [ctx.session, tab.template], {"template": tab.template},
       api_visibility="private")
    on(tab.template.focus, template_choices, [ctx.session, tab.template], {"template": tab.template},
       api_visibility="private")
    # Start only checks and launches (a few seconds), so it takes a turn in the model queue like other model work.
    on(tab.start.click, start, [ctx.session, tab.visitor, tab.view, tab.form], tab.outputs(*SHOWN),
       api_name="finetune_start", **ctx.model_work)
    on(tab.stop.click, stop, [ctx.session, tab.run], tab.outputs("progress"), api_name="finetune_stop",
       concurrency_limit=None)
    poll_inputs = [ctx.session, tab.visitor, tab.run, tab.view]
    on(tab.timer.tick, poll, poll_inputs, tab.outputs(*SHOWN), api_name="finetune_poll", concurrency_limit=None)
    on(tab.run.input, poll, poll_inputs, tab.outputs(*SHOWN), api_visibility="private", concurrency_limit=None)


def _pick(infos: list[RunInfo], picked) -> Optional[RunInfo]:
    by_id = {i.run_id: i for i in infos}
    if isinstance(picked, str) and picked in by_id:
        return by_id[picked]
    running = [i for i in infos if i.state == "running"]
    return (running or infos or [None])[0]


def _show(session: Session, key: str, store_key: bool, picked, seen: Optional[dict], message: Optional[str] = None):
    """The outputs of ``tab.shown``; unchanged parts are skipped (the timer calls this every second)."""
    seen = dict(seen or {})
    skip = gr.skip()
    infos = refresh_runs(session)
    info = _pick(infos, picked)
    if info is not None:
        info = POOL.info(session.runs_folder, info.run_id)  # includes a thread's error that state.json lacks
    signature = [[i.run_id, i.state] for i in infos]
    events = POOL.events(session.runs_folder, info.run_id) if info is not None else []
    run_id = info.run_id if info is not None else None
    fresh_runs = signature != seen.get("runs")
    fresh_run = run_id != seen.get("run") or len(events) != seen.get("events") or info is not None and \
        info.state != seen.get("state")
    picker = gr.update(choices=[(view.run_label(i), i.run_id) for i in infos], value=run_id) \
        if fresh_runs or run_id != picked else skip
    if info is None:
        progress = message_html("info", message or "No runs yet: choose data and a mask, then press Start "
                                                   "fine-tuning.")
    else:
        progress = view.progress_html(info, events)
    chart = view.loss_figure(events, run_id) if fresh_run else skip
    table = view.runs_frame(infos) if fresh_runs else skip
    scatter = view.scatter_figure(infos) if fresh_runs else skip
    seen.update(run=run_id, events=len(events), state=info.state if info else None, runs=signature)
    running = any(i.state == "running" for i in infos) or (info is not None and info.state == "running")
    return (key if store_key else skip, picker, progress, chart, table, scatter, seen, gr.Timer(active=running))


def poll(session: Session, key, picked, seen):
    """A timer tick (or a picked run): re-attach to the visitor's runs and show the picked or running one."""
    seen = dict(seen or {})
    key, store = attach(session, key, seen)
    return _show(session, key, store, picked, seen)


def template_choices(session: Session, current):
    """The tab's template list: computed on the fly, or one of the visitor's templates."""
    names = session.names()
    value = current if current in names or current == ON_THE_FLY else ON_THE_FLY
    return gr.update(choices=[ON_THE_FLY, *names], value=value)


# ---- start and stop ---------------------------------------------------------------------------


@action("progress", translate=lambda exc: _explained(exc))
def start(session: Session, key, seen, form: dict):
    """Check the settings, start the run in the background, and show it (the timer follows it)."""
    skip = gr.skip()
    seen = dict(seen or {})
    key, store = attach(session, key, seen)
    config = config_from_form(session, form)
    name = check_run_name(form["run_name"])
    session.require_model()  # the visitor's model is loaded (the run loads its own private copy)
    yield (key if store else skip, skip, message_html("info", "Checking the data and the template, loading a "
           "private copy of the model…"), skip, skip, skip, seen, skip)
    run_id = POOL.start(session.runs_folder, config, name)
    session.runs[run_id] = session.runs_folder / run_id
    yield _show(session, key, store, run_id, seen)


def _explained(exc: Exception) -> Exception:
    """Out of memory while loading the run's copy of the model: say what to lower."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return FnwebError("Out of memory while preparing the run (it trains its own copy of the model): load a "
                          "smaller model, pick 4-bit quantization, or lower the batch size and max sequence length.")
    return exc


def stop(session: Session, picked):
    """Stop & save: the run finishes the step in progress, saves its adapter and measures it."""
    folder = session.runs_folder
    running = POOL.manager(folder).running() if folder is not None else []
    if not running:
        gr.Info("No run of yours is running.")
        return gr.skip()
    run_id = picked if picked in running else running[0]
    stepped = [e for e in POOL.events(folder, run_id) if e.get("event") == "step"]
    POOL.stop(folder, run_id)
    if not stepped:
        text = (f"Stopping {run_id} before its first step is done: if training has begun, it stops after step 1 "
                "and saves that adapter; if it is still measuring the model, it ends without an adapter.")
    else:
        text = (f"Stopping {run_id}: it finishes step {stepped[-1]['step'] + 1}, saves the adapter and measures "
                "learning and forgetting.")
    gr.Info(text)
    return message_html("stopped", text)
