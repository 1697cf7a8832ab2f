"""The app's parts without a browser or a model: figures, rendering, jobs, sessions, presets, forms."""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest

from fnweb import plots
from fnweb.compare import ColumnResult, Comparison
from fnweb.errors import FnwebError, Stopped
from fnweb.metrics import Stat
from fnweb.progress import Progress
from fnweb.templates import Template


def template(width=1536, layers=30, k=3, seed=0) -> Template:
    rng = np.random.default_rng(seed)
    masks = (rng.random((layers * width, k)) > 0.97).astype(np.uint8)
    return Template.from_masks(masks, list(range(layers)), width)


# ---- plots --------------------------------------------------------------------------


def test_heatmap_bins_wide_layers_and_keeps_every_member():
    t = template()
    fig = plots.membership_heatmap(t, component=1)
    heat = fig.data[0]
    assert len(heat.x) == 256 and len(heat.y) == 30  # 1536 neurons in 256 bins of 6
    assert np.nansum(np.asarray(heat.z, dtype=float)) == sum(len(v) for v in t.components[1].values())
    assert heat.customdata[0][0] == "0-5" and "neurons %{customdata}" in heat.hovertemplate
    narrow = plots.membership_heatmap(template(width=64, layers=3), component=0)
    assert len(narrow.data[0].x) == 64 and narrow.data[0].customdata[0][5] == "5"  # one neuron per cell


def test_heatmap_of_all_components_colours_by_the_dominant_one():
    t = Template(layers=[0, 1], width=4, components={0: {0: [0, 1]}, 1: {0: [1], 1: [3]}})
    heat = plots.membership_heatmap(t, max_bins=2).data[0]  # bins: neurons 0-1 and 2-3
    z = np.asarray(heat.z, dtype=float)
    assert z[0, 0] == 0 and np.isnan(z[0, 1]) and z[1, 1] == 1 and np.isnan(z[1, 0])
    hover = heat.customdata[0][0][1]
    assert hover == "component 0: 2<br>component 1: 1"
    assert fig_modebar_kept(plots.membership_heatmap(t))


def fig_modebar_kept(fig) -> bool:
    return fig.layout.modebar.remove is None  # nothing stripped: the camera button stays


def test_coverage_bars_and_union():
    t = Template(layers=[0, 1], width=10, components={0: {0: [0, 1, 2]}, 1: {0: [2, 3], 1: [9]}})
    fig = plots.coverage_bars(t)
    bars = [d for d in fig.data if d.type == "bar"]
    assert [list(b.y) for b in bars] == [[30.0, 0.0], [20.0, 10.0]]
    union = next(d for d in fig.data if d.name == "union")
    assert list(union.y) == [40.0, 10.0]  # neuron 2 is in both: counted once


def test_coverage_table_shows_stability_when_the_template_recorded_it():
    from fnweb.templates import TemplateMeta
    from fnweb.ui.render import coverage_frame

    meta = TemplateMeta(model_id="m", site="neurons", n_layers=2, width=10, k=2, threshold="percentile",
                        threshold_value=98.0,
                        ica={"stability": {"runs": 5, "correlation": [0.991, 0.52], "mask_iou": [0.9, 0.1]}})
    t = Template(layers=[0, 1], width=10, components={0: {0: [0, 1, 2]}, 1: {0: [2, 3], 1: [9]}}, meta=meta)
    frame = coverage_frame(t)
    assert list(frame["stability"]) == ["0.99 / 0.90", "0.52 / 0.10"]
    assert "stability" not in coverage_frame(Template(layers=[0], width=10, components={0: {0: [1]}}))
    assert "stability" not in coverage_frame(Template([], 1, {}))


def test_jaccard_and_overlap_matrix():
    t = Template(layers=[0, 1], width=10, components={0: {0: [0, 1, 2]}, 1: {0: [2, 3], 1: [2]}, 2: {}})
    matrix = plots.jaccard(t)
    assert matrix[0, 1] == pytest.approx(1 / 5) and matrix[0, 2] == 0 and matrix[2, 2] == 1
    heat = plots.overlap_matrix(t).data[0]
    assert np.isnan(heat.z[0][0]) and heat.text[0][1] == "0.20" and heat.text[1][1] == ""


def test_plots_refuse_unknown_components():
    with pytest.raises(FnwebError, match="Component 7 is not in this template"):
        plots.membership_heatmap(template(k=2), component=7)


# ---- rendering ----------------------------------------------------------------------


def test_columns_mark_where_a_column_departs():
    from fnweb.ui import render

    base = ColumnResult("baseline", "unchanged model", "Paris is big", [1, 2, 3], 0.0, prefix="Paris is big")
    lesion = ColumnResult("lesion", "lesion components 0", "Paris <b>", [1, 9], 0.02, departs_at=1,
                          prefix="Paris", rest=" <b>")
    html = render.columns_html(Comparison("Capital?", [base, lesion], done=False, step=2))
    assert '<mark class="fn-depart"> &lt;b&gt;</mark>' in html  # escaped, and highlighted from the departure on
    assert "departs from the baseline at token 1" in html and "fn-cursor" in html and "token 2" in html


def test_metrics_table_shows_mean_and_spread_of_random_draws():
    from fnweb.ui import render

    random = ColumnResult("random", "lesion random control", "x", [1], 0.02, departs_at=0,
                          metrics={"kl": Stat(1.0, 0.25), "ce": Stat(2.0, 0.5), "top1": Stat(0.5, 0.1)},
                          scored=4, draws=3)
    frame = render.metrics_frame(Comparison("p", [random], done=True))
    row = frame.iloc[0]
    assert row["column"] == "Random control (3 draws)"
    assert row["KL from baseline"] == "1.000 ± 0.250" and row["top-1 agreement"] == "50.0 ± 10.0 %"
    assert row["share masked"] == "2.00 %" and row["departs at token"] == "0"
    assert render.metrics_frame(Comparison("p", [random], done=False)).empty


def test_progress_shows_phase_counts_and_time_left():
    from fnweb.ui import render

    event = Progress("capturing", 500, 2000, "tokens", "Capturing activations", started=time.monotonic() - 10)
    html = render.progress_html(event, 12.0)
    assert "Step 2 of 4 · Capturing activations" in html and "500 of 2,000 tokens" in html
    assert "about 30 s left" in html and "12 s elapsed" in html


# ---- jobs ---------------------------------------------------------------------------


def test_stream_yields_events_then_the_result():
    from fnweb.ui.jobs import Job, stream

    def work(emit, stop):
        for i in range(3):
            emit(i)
            time.sleep(0.05)
        return "result"

    updates = list(stream(work, object(), Job(), tick=0.01))
    assert updates[-1].kind == "done" and updates[-1].value == "result"
    assert [u.value for u in updates if u.kind == "event"][-1] == 2


def test_stream_raises_the_work_error_and_stops_on_request():
    from fnweb.ui.jobs import Job, stream

    def failing(emit, stop):
        raise FnwebError("bad settings")

    with pytest.raises(FnwebError, match="bad settings"):
        list(stream(failing, object(), Job()))

    job = Job()

    def endless(emit, stop):
        while True:
            stop.check()
            time.sleep(0.01)

    updates = stream(endless, object(), job, tick=0.02)
    next(updates)
    job.request_stop()  # what the Stop button does: a file, seen across processes too
    with pytest.raises(Stopped):
        list(updates)
    job.cleanup()
    assert not job.stop_path.exists()


def test_jobs_on_one_model_take_turns():
    from fnweb.ui.jobs import Job, stream

    model, inside, overlaps = object(), [], []

    def work(emit, stop):
        inside.append(1)
        overlaps.append(len(inside))
        time.sleep(0.2)
        inside.pop()
        return True

    results = []
    threads = [threading.Thread(target=lambda: results.append([u.kind for u in stream(work, model, Job(),
                                                                                       tick=0.02)]))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert max(overlaps) == 1
    assert any("waiting" in kinds for kinds in results)  # the second one said it was waiting


def test_a_reader_that_goes_away_stops_the_work():
    from fnweb.ui.jobs import Job, stream

    stopped = threading.Event()

    def work(emit, stop):
        while not stop.is_set:
            emit("tick")
            time.sleep(0.01)
        stopped.set()

    updates = stream(work, object(), Job(), tick=0.01)
    next(updates)
    updates.close()  # the page went away
    assert stopped.wait(2)


def test_turns_are_first_come_first_served_and_say_each_place_in_the_line():
    from fnweb.progress import StopFlag
    from fnweb.ui.jobs import Turns

    turns, model, other = Turns(slots=lambda: 2, poll=0.01), object(), object()
    order, places, lock = [], {}, threading.Lock()

    def job(name, on):
        with turns.turn(on, StopFlag(), lambda place: places.setdefault(name, []).append(place)):
            with lock:
                order.append(name)
            time.sleep(0.3)

    threads = [threading.Thread(target=job, args=(name, model)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # a, then b, then c ask for the model
    for thread in threads:
        thread.join(5)
    assert order == ["a", "b", "c"] and "a" not in places
    assert [(w.position, w.reason) for w in places["b"]] == [(1, "model")]
    assert [(w.position, w.reason) for w in places["c"]] == [(2, "model"), (1, "model")]  # it moves up

    one_slot = Turns(slots=lambda: 1, poll=0.01)
    said = []
    with one_slot.turn(model, StopFlag(), said.append):
        waiter = threading.Thread(target=lambda: one_slot.turn(other, StopFlag(), said.append).__enter__())
        waiter.start()
        time.sleep(0.1)
    waiter.join(5)
    assert [(w.position, w.reason, w.slots) for w in said] == [(1, "slots", 1)]  # another model, no free slot


def test_the_runner_keeps_what_it_knew_between_ticks_and_says_when_a_job_waits():
    """The status never falls back to an older state: a tick keeps the last progress; a waiting job says so."""
    from fnweb.progress import Progress
    from fnweb.ui import runner
    from fnweb.ui.jobs import Turns, stream
    from fnweb.ui.state import Session

    turns, model, release = Turns(poll=0.01), object(), threading.Event()

    def device(request, job, hold=True):
        def work(emit, stop):
            emit(Progress("measuring", 3, 10, "passes", "Lesions and random controls"))
            while hold and not release.is_set():  # a long phase without events: only ticks arrive
                stop.check()
                time.sleep(0.01)
            return "result"
        yield from stream(work, model, job, tick=0.02, turns=turns)

    def session():
        visitor = Session()
        visitor.require_model = lambda: None  # no model is loaded: the work above needs none
        return visitor

    first, second = session(), session()
    views = runner.run(first, device, title="Running the experiment")
    statuses = [next(views).status_html()]
    assert "Queued" in statuses[0]
    while "3 of 10 passes" not in statuses[-1]:
        statuses.append(next(views).status_html())
    later = [next(views).status_html() for _ in range(5)]  # ticks
    assert all("3 of 10 passes" in html and "Lesions and random controls" in html for html in later)

    waiting = runner.run(second, lambda request, job: device(request, job, hold=False), title="Building")
    seen = [next(waiting).status_html() for _ in range(3)]
    assert any("Waiting for another job on this model (position 1)" in html for html in seen)
    release.set()
    *_, done = views
    assert done.state == "done" and done.result == "result" and first.job is None
    *_, done = waiting
    assert done.result == "result" and second.job is None


def test_a_stop_while_waiting_ends_the_job_as_stopped():
    from fnweb.progress import StopFlag
    from fnweb.ui import runner
    from fnweb.ui.jobs import Turns, stream
    from fnweb.ui.state import Session

    turns, model = Turns(poll=0.01), object()
    visitor = Session()
    visitor.require_model = lambda: None

    def device(request, job):
        yield from stream(lambda emit, stop: "never", model, job, tick=0.02, turns=turns)

    with turns.turn(model, StopFlag(), lambda place: None):  # another job holds the model throughout
        views = runner.run(visitor, device, title="Generating")
        while next(views).state != "waiting":
            pass
        assert runner.stop(visitor)
        *_, last = views
    assert last.stopped and last.done and visitor.job is None


# ---- sessions, presets, forms --------------------------------------------------------


def test_each_visitor_gets_a_fresh_session_and_names_stay_unique():
    from fnweb.ui.state import MAX_TEMPLATES, Session

    first = Session()
    first.add(template(width=8, layers=2), "built", "factual · k3")
    second = copy.deepcopy(first)  # what gr.State does for each new visitor
    assert second.templates == {} and second.model is None
    entry = first.add(template(width=8, layers=2), "built", "factual · k3")
    assert entry.name == "factual · k3 (2)" and first.selected == entry.name and entry.path.exists()
    for i in range(MAX_TEMPLATES + 2):
        first.add(template(width=8, layers=2), "built", f"t{i}")
    assert len(first.templates) == MAX_TEMPLATES and first.selected == f"t{MAX_TEMPLATES + 1}"
    with pytest.raises(FnwebError, match="No template called 'nope'"):
        first.get("nope")
    with pytest.raises(FnwebError, match="No model loaded"):
        first.require_model()
    first.close()


def test_presets_are_valid_forms():
    from fnweb.ui.compare_tab import settings_from_form
    from fnweb.ui.presets import PRESETS
    from fnweb.ui.templates_tab import config_from_form

    keys = set()
    for preset in PRESETS:
        config = config_from_form(preset.template_form())
        form = preset.compare_form()
        settings_from_form(form)
        prompt, components, columns = form["prompt"], form["components"], form["columns"]
        assert prompt and columns and all(0 <= c < config.k for c in components)
        keys.add(repr(preset.template_form()))
    assert len(keys) == 1  # one shared template: after the first preset the others start at once


def test_forms_name_the_setting_that_is_wrong():
    from fnweb.ui.forms import parse_hub, whole
    from fnweb.ui.templates_tab import config_from_form

    with pytest.raises(FnwebError, match="Seed is empty"):
        whole(None, "Seed")
    with pytest.raises(FnwebError, match="k must be a whole number"):
        whole(2.5, "k")
    assert [s.label() for s in parse_hub("tatsu-lab/alpaca\n\nglue, sst2, validation")] == [
        "tatsu-lab/alpaca", "glue[sst2]:validation"]
    with pytest.raises(FnwebError, match="Unknown site"):
        config_from_form(dict(builtin=["factual"], hub="", files=None, samples=10, max_tokens=32, k=3, site="attention",
                              threshold="percentile", threshold_value=98, seed=0))
