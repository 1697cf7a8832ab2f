"""fnweb's typed API: the engine's main actions as documented endpoints, and as tools of the app's MCP server.

The page's own endpoints (``/compare``, ``/build_template``, ...) act on a visitor's
session: a template built in one call is used by the next. An MCP client (an agent) or a
script wants calls that stand alone, so these take and give back everything they need as
plain JSON: a template is its JSON record (``Template.to_dict``), the model a Hub id or
the embedded model's id. Each one:

- ``template_from_builtin``: build a template from built-in prompt sets;
- ``list_components``: a template's components, their size, layers and card labels;
- ``compare_texts``: baseline, lesion, preserve and random-control generations side by
  side, with their metrics and each column's verdict against its random control;
- ``run_experiment``: lesion every component (and the preservation curve) on held-out
  built-in prompt sets, against random controls.

Model work takes its turn on the shared model like any job of the page (``jobs.stream``:
masks are hooks on a shared model), and is bounded like the page's forms (the engine's
checks). Gradio turns each function's docstring into its API and MCP description (the
``Args:`` lines describe the parameters). ``mcp_available`` says whether the ``mcp``
package that Gradio's MCP server needs is installed.

What a call makes is also kept where the page keeps what it makes, in the caller's own
session (a hidden first input, never a parameter): a template built joins the
session's templates (and is selected, as a build in the Templates tab is), and a
comparison or an experiment becomes the session's last one (on its template, when the
template is one of the session's). When the session has its browser's store (a page
that sent its browser key), they are kept there too and come back after a reload
(``fnweb.ui.saved``). A gradio_client ``Client`` is a session of its own with no
browser: what it makes lasts as long as that session. Calls from Gradio's MCP server
keep nothing: it calls the app through one client shared by every agent, and a
session shared between callers would share their templates.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import gradio as gr

from ..access import check_hub_id
from ..build import BuildConfig, build_template
from ..cards import component_labels
from ..compare import COLUMNS, RANDOM_OF, GenerationSettings, compare_stream
from ..experiments import ExperimentConfig, experiment_stream
from ..ids import is_embedded
from ..models import ModelRequest, load_model
from ..prompts import BUILTIN_PREFIX, PromptSource, builtin_sets
from ..templates import Template
from ..verdicts import verdicts
from . import links
from .feedback import action
from .jobs import Job, stream
from .model_bar import default_model_id
from .state import Session, SessionTemplate
from .templates_tab import config_key, config_label

MCP_PREFIX = "fnweb_"  # tool names as an agent sees them: fnweb_compare_texts, ...
# The header Gradio's MCP server sends with its calls (its one client, shared by every agent: see _keeps).
MCP_CALLER = ("x-gradio-user", "mcp")


def mcp_available() -> bool:
    """Whether Gradio's MCP server can run here (it needs the ``mcp`` package: ``pip install "mcp>=1.21,<2"``)."""
    return importlib.util.find_spec("mcp") is not None


def _model(model: Optional[str]):
    """The loaded model for an id (checked as the model bar checks it: a Hub id or the embedded model)."""
    model_id = (model or default_model_id()).strip()
    if not is_embedded(model_id):
        check_hub_id(model_id, "the model")
    request = ModelRequest(model_id=model_id)
    request.validate()
    return load_model(request)


def _job(lm, work):
    """Run ``work(emit, stop)`` in its turn on ``lm``'s model; its return value."""
    for update in stream(work, lm.model, Job()):
        if update.kind == "done":
            return update.value
    return None


def _template(template: dict) -> Template:
    return Template.from_dict(template, source="the template argument")


def _keeps(session, request: Optional[gr.Request]) -> bool:
    """Whether a call keeps what it makes in ``session``: not a call of the MCP server (one session for every agent)."""
    headers = getattr(request, "headers", None) or {}
    name, value = MCP_CALLER
    return isinstance(session, Session) and headers.get(name) != value


def _entry_of(session: Session, template: Template) -> Optional[SessionTemplate]:
    """The session's template with the same networks as ``template`` (the newest), or None."""
    record_of = template.to_dict()
    return next((e for e in reversed(session.templates.values()) if e.template.to_dict() == record_of), None)


@action()
def template_from_builtin(session: Session, sets: list[str], samples: int = 25, max_tokens: int = 128, k: int = 10,
                          seed: int = 0, model: Optional[str] = None, request: gr.Request = None) -> dict:
    """Build a template (the model's functional networks) from fnweb's built-in prompt sets.

    The template is kept in the caller's session, selected (a gradio_client Client keeps it for its session only),
    and in the browser's saved items when the session has them; an MCP call keeps nothing.

    Args:
        sets: built-in prompt sets to capture activations on, e.g. ["factual", "arithmetic", "code", "creative"].
        samples: prompts per set (1-1000).
        max_tokens: tokens per prompt and response.
        k: number of ICA components (networks).
        seed: seed of the prompt sampling and the ICA.
        model: a Hub model id, or "embedded:SmolLM2-135M-Instruct"; empty: the app's default model.
    Returns:
        The template as a JSON record (its networks per layer and how it was made): pass it to the other tools.
    """
    unknown = sorted(set(sets or []) - set(builtin_sets()))
    if unknown or not sets:
        raise gr.Error(f"Choose built-in sets from {', '.join(builtin_sets())} (got {sets}).")
    lm = _model(model)
    config = BuildConfig(sources=[PromptSource(BUILTIN_PREFIX + name) for name in sets],
                         samples_per_dataset=int(samples), max_tokens=int(max_tokens), k=int(k), seed=int(seed))
    built = _job(lm, lambda emit, stop: build_template(lm, config, progress=emit, stop=stop))
    if _keeps(session, request):
        session.add(built.template, "built", config_label(config), config_key(lm.request, config))
    return built.template.to_dict()


@action()
def list_components(template: dict) -> list[dict]:
    """A template's components (networks), strongest first.

    Args:
        template: a template's JSON record (from fnweb_template_from_builtin, or a template file's contents).
    Returns:
        One record per component: its id, neuron count, share of all neurons, layers, and card label (if any).
    """
    loaded = _template(template)
    labels = component_labels(loaded)
    return [{"component": row["component"], "neurons": row["channels"], "share": row["share"],
             "layers": row["layers"], "label": labels.get(row["component"], "")} for row in loaded.coverage()]


@action()
def compare_texts(session: Session, template: dict, prompt: str, components: list[int],
                  columns: Optional[list[str]] = None, max_new_tokens: int = 48, random_draws: int = 3, seed: int = 0,
                  model: Optional[str] = None, request: gr.Request = None) -> dict:
    """Generate from one prompt with the model unchanged, with components lesioned or preserved, and with as many
    random neurons (the control), side by side; score every column on the baseline's text.

    The comparison becomes the caller's session's last one (a gradio_client Client keeps it for its session only),
    and is kept in the browser's saved items when the session has them; an MCP call keeps nothing.

    Args:
        template: a template's JSON record, made on this model.
        prompt: the prompt.
        components: component ids to lesion or preserve, e.g. [7].
        columns: any of "baseline", "lesion", "preserve", "random" (default: all).
        max_new_tokens: tokens to generate (1-1024), greedy.
        random_draws: seeded draws of each random control (1-20).
        seed: seed of the random draws.
        model: the model the template was made on; empty: the app's default model.
    Returns:
        Per column: its text, what was masked, where it departs from the baseline, its metrics (mean and spread
        over draws), the other draws' texts; and per intervention its verdict against its random control.
    """
    lm = _model(model)
    settings = GenerationSettings(max_new_tokens=int(max_new_tokens), random_draws=int(random_draws), seed=int(seed))
    loaded = _template(template)

    def work(emit, stop):
        last = None
        for state in compare_stream(lm, prompt, loaded, components, columns or list(COLUMNS), settings, stop):
            last = state
        return last

    result = _job(lm, work)
    if _keeps(session, request):
        form = {"prompt": prompt, "components": components, "columns": columns or list(COLUMNS)}
        links.keep_comparison(session, lm.model_id, lm.request.dtype, _entry_of(session, loaded), form, settings,
                              result)
    found = verdicts(result, RANDOM_OF)
    return {"prompt": result.prompt, "tokens": result.step, "columns": [
        {"column": c.name, "masked": c.label, "masked_share": c.masked_share, "text": c.text,
         "departs_at": c.departs_at, "draws": c.draws, "other_draws": c.draw_texts,
         "metrics": {key: {"mean": stat.mean, "sd": stat.sd} for key, stat in c.metrics.items()},
         "vs_random": found[c.name].line() if c.name in found else None} for c in result.columns]}


@action()
def run_experiment(session: Session, template: dict, sets: list[str], samples: int = 20, draws: int = 5,
                   max_tokens: int = 128, components: Optional[list[int]] = None, curve: bool = True, seed: int = 0,
                   model: Optional[str] = None, request: gr.Request = None) -> dict:
    """Lesion each component on held-out prompts, against random controls of its size, and (optionally) measure
    how much of the model's behaviour each network alone preserves.

    The result is kept on the caller's session's template with the same networks, when it has one (its cards show
    it), and in the browser's saved items when the session has them (a gradio_client Client keeps it for its session
    only); an MCP call keeps nothing.

    Args:
        template: a template's JSON record, made on this model.
        sets: built-in held-out prompt sets, e.g. ["factual", "code"] (prompts the template was built from are
            left out).
        samples: held-out prompts per set (0: all that are left).
        draws: seeded random controls per lesion (1-50).
        max_tokens: tokens per prompt and response.
        components: component ids to test (default: every one).
        curve: also measure the preservation curve.
        seed: seed of the prompt sampling and the random draws.
        model: the model the template was made on; empty: the app's default model.
    Returns:
        The experiment's result record: per component its lesion effects and those of its random controls, the
        curve, and the settings.
    """
    lm = _model(model)
    config = ExperimentConfig(sources=[PromptSource(BUILTIN_PREFIX + name) for name in sets or []],
                              samples_per_dataset=int(samples), draws=int(draws), max_tokens=int(max_tokens),
                              components=None if not components else [int(c) for c in components],
                              curve=bool(curve), seed=int(seed))
    config.validate()
    loaded = _template(template)

    def work(emit, stop):
        last = None
        for state in experiment_stream(lm, loaded, config, emit, stop):
            last = state
        return last

    result = _job(lm, work)
    if _keeps(session, request):
        session.keep_experiment(_entry_of(session, loaded), result)
    return result.to_dict()


ENDPOINTS = (template_from_builtin, list_components, compare_texts, run_experiment)
KEEPING = (template_from_builtin, compare_texts, run_experiment)  # their first parameter is the caller's session


def add_api(model_work: dict, session: gr.State) -> None:
    """Register the typed endpoints (inside the app's ``gr.Blocks``); model work shares the page's model queue.

    ``gr.api`` types an endpoint from its function's hints but takes no session: the ones that keep what they make
    are registered as it registers them, with ``session`` (the page's ``gr.State``) as a hidden first input.
    """
    for fn in ENDPOINTS:
        keywords = {"api_name": fn.__name__, "api_description": fn.__doc__.split("\n\n")[0]}
        if fn is list_components:
            gr.api(fn, **keywords)
        else:
            _session_endpoint(fn, session, **keywords, **model_work)


def _session_endpoint(fn, session: gr.State, **keywords) -> None:
    """``gr.api(fn)`` with ``session`` filling ``fn``'s first parameter (Gradio keeps it out of the API's signature)."""
    from gradio.components.api_component import Api
    from gradio.context import get_blocks_context
    from gradio.events import python_type_to_json_schema  # the one gr.api types its endpoints with
    from gradio.utils import get_function_params, get_return_types

    params = get_function_params(fn)[1:]  # gr.Request, like the session, is not a parameter a caller passes
    inputs = [Api(default if has_default else None, python_type_to_json_schema(hint), f"{name}")
              for name, has_default, default, hint in params]
    outputs = [Api(None, python_type_to_json_schema(hint)) for hint in get_return_types(fn)]
    get_blocks_context().set_event_trigger([], fn, [session, *inputs], outputs, preprocess=False, postprocess=False,
                                           show_progress="hidden", trigger_mode=None, **keywords)
