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
package that Gradio's MCP server needs is installed. Nothing here keeps state.
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
from .feedback import action
from .jobs import Job, stream
from .model_bar import default_model_id

MCP_PREFIX = "fnweb_"  # tool names as an agent sees them: fnweb_compare_texts, ...


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


@action()
def template_from_builtin(sets: list[str], samples: int = 25, max_tokens: int = 128, k: int = 10, seed: int = 0,
                          model: Optional[str] = None) -> dict:
    """Build a template (the model's functional networks) from fnweb's built-in prompt sets.

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
def compare_texts(template: dict, prompt: str, components: list[int], columns: Optional[list[str]] = None,
                  max_new_tokens: int = 48, random_draws: int = 3, seed: int = 0,
                  model: Optional[str] = None) -> dict:
    """Generate from one prompt with the model unchanged, with components lesioned or preserved, and with as many
    random neurons (the control), side by side; score every column on the baseline's text.

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
    found = verdicts(result, RANDOM_OF)
    return {"prompt": result.prompt, "tokens": result.step, "columns": [
        {"column": c.name, "masked": c.label, "masked_share": c.masked_share, "text": c.text,
         "departs_at": c.departs_at, "draws": c.draws, "other_draws": c.draw_texts,
         "metrics": {key: {"mean": stat.mean, "sd": stat.sd} for key, stat in c.metrics.items()},
         "vs_random": found[c.name].line() if c.name in found else None} for c in result.columns]}


@action()
def run_experiment(template: dict, sets: list[str], samples: int = 20, draws: int = 5, max_tokens: int = 128,
                   components: Optional[list[int]] = None, curve: bool = True, seed: int = 0,
                   model: Optional[str] = None) -> dict:
    """Lesion each component on held-out prompts, against random controls of its size, and (optionally) measure
    how much of the model's behaviour each network alone preserves.

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

    return _job(lm, work).to_dict()


ENDPOINTS = (template_from_builtin, list_components, compare_texts, run_experiment)


def add_api(model_work: dict) -> None:
    """Register the typed endpoints (inside the app's ``gr.Blocks``); model work shares the page's model queue."""
    for fn in ENDPOINTS:
        keywords = {} if fn is list_components else model_work
        gr.api(fn, api_name=fn.__name__, api_description=fn.__doc__.split("\n\n")[0], **keywords)
