"""State that survives a reload, and shareable links, without a browser or a model: the visitor store, the
link codec, comparison records (JSON and Markdown), and a session restored from its browser's key."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from fnweb.compare import ColumnResult, Comparison, GenerationSettings
from fnweb.compare_record import comparison_from_dict, from_record, markdown, record, to_json
from fnweb.errors import FnwebError
from fnweb.metrics import Stat
from fnweb.templates import Template
from fnweb.ui import links
from fnweb.ui.state import Session
from fnweb.ui.visitor_store import LIMITS, VisitorStore

EMBEDDED = "embedded:SmolLM2-135M-Instruct"


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("FNWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FNWEB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def small_template(n: int = 0) -> Template:
    return Template(layers=[0, 1], width=4, components={0: {0: [n % 4]}, 1: {1: [1, 2]}})


def a_comparison() -> Comparison:
    base = ColumnResult("baseline", "unchanged", "Paris is the capital.", [5, 6, 7], 0.0, scored=3)
    lesion = ColumnResult("lesion", "components 7", "Tokyo | maybe", [5, 9], 0.02, departs_at=1,
                          metrics={"kl": Stat(0.5), "ce": Stat(2.25), "top1": Stat(0.5)}, prefix="", rest="Tokyo",
                          scored=3)
    random = ColumnResult("random", "as many random", "Paris.", [5, 6], 0.02, departs_at=None,
                          metrics={"kl": Stat(0.1, 0.05), "ce": Stat(1.5, 0.1), "top1": Stat(0.9, 0.1)}, draws=3)
    return Comparison("What is the capital of France?", [base, lesion, random], done=True, step=3)


def an_experiment():
    from fnweb.experiment_results import ExperimentResult, LesionRow

    row = LesionRow(component="1", ids=[1], neurons=2, share=0.25, prompts=8,
                    network={"ce": 2.3, "dce": 0.3, "kl": 0.2},
                    random={"dce": Stat(0.01, 0.005), "kl": Stat(0.01, 0.002)}, ratio={"dce": 30.0, "kl": 20.0})
    return ExperimentResult(baseline_ce=2.0, rows=[row], union=None, curve=[], settings={"draws": 5}, prompts=8,
                            tokens=100)


def a_setup(ref="preset", columns=("baseline", "lesion", "random")) -> dict:
    form = {"prompt": "What is the capital of France? & more", "components": [7, 8], "columns": list(columns)}
    return links.setup_of(EMBEDDED, "auto", "preset template", ref, form, GenerationSettings(40, True, 0.8, 0, 3))


# ---- the store ---------------------------------------------------------------------------------


def test_store_keeps_reads_and_bounds_each_kind(folders):
    store = VisitorStore.for_key("k" * 32)
    count = LIMITS["comparisons"] + 2
    ids = [store.add("comparisons", json.dumps({"n": i}), {"prompt": f"p{i}"}) for i in range(count)]
    kept = store.items("comparisons")
    assert [i["id"] for i in kept] == ids[2:]  # the two oldest went
    assert json.loads(store.read("comparisons", ids[-1])) == {"n": LIMITS["comparisons"] + 1}
    with pytest.raises(FnwebError, match="deleted, pushed out by newer ones, or saved in another browser"):
        store.read("comparisons", ids[0])
    assert not (store.folder / "comparisons" / f"{ids[0]}.json").exists()  # its file went with it
    assert not [p for p in store.folder.rglob("*.tmp")]  # atomic writes leave no temp files


def test_store_byte_bound_drops_the_oldest_and_refuses_what_never_fits(folders):
    store = VisitorStore(folders / "one", limit=1000)
    first = store.add("templates", "x" * 400)
    second = store.add("experiments", "y" * 400)
    third = store.add("comparisons", "z" * 400)  # 1200 > 1000: the oldest (a template) goes
    assert [i["id"] for i in store.items("templates")] == []
    assert store.size() == 800 and {second, third} == {store.items("experiments")[0]["id"],
                                                       store.items("comparisons")[0]["id"]}
    assert not (store.folder / "templates" / f"{first}.json").exists()
    with pytest.raises(FnwebError, match="more than the 0 MB this app keeps per browser"):
        store.add("templates", "w" * 1001)


def test_store_is_per_key_ignores_a_damaged_index_and_clears(folders):
    one, two = VisitorStore.for_key("a" * 32), VisitorStore.for_key("b" * 32)
    one.add("templates", "{}", {"name": "mine"})
    assert one.folder != two.folder and two.items("templates") == []  # nothing shared between visitors
    assert "a" * 32 not in str(one.folder)  # the folder does not give the key away
    (one.folder / "index.json").write_text("{not json", encoding="utf-8")
    assert one.items("templates") == []  # read as absent, never trusted
    (one.folder / "index.json").write_text(json.dumps({"templates": [{"id": "../../etc", "bytes": 1}]}))
    assert one.items("templates") == []  # an id that is not ours is dropped
    with pytest.raises(FnwebError):
        one.read("templates", "../../etc/passwd")
    one.clear()
    assert not one.folder.exists()


# ---- the link codec ------------------------------------------------------------------------


def test_link_round_trip():
    query = links.query(a_setup())
    link = links.parse(dict(parse_qsl(query)))
    assert link.model == EMBEDDED and link.template == "preset"
    assert link.form == {"prompt": "What is the capital of France? & more", "components": [7, 8],
                         "columns": ["baseline", "lesion", "random"], "max_new_tokens": 40, "decoding": "greedy",
                         "temperature": 0.8, "seed": 0, "draws": 3, "preserve_scope": "all_layers", "alpha": 2.0,
                         "control_of": "lesion", "control": "layer"}
    hub = links.parse(dict(parse_qsl(links.query(a_setup("hub:someone/smol-template@v1")))))
    assert hub.hub == ("someone/smol-template", "v1") and hub.saved_id is None
    saved = links.parse(dict(parse_qsl(links.query(a_setup("saved:0123456789abcdef")))))
    assert saved.saved_id == "0123456789abcdef"
    baseline = links.parse(dict(parse_qsl(links.query(a_setup(None, ("baseline",))))))
    assert baseline.template == ""  # a baseline alone needs no template


def test_links_carry_the_intervention_settings_and_old_links_read_as_defaults():
    form = {"prompt": "Hi", "components": [1], "columns": ["baseline", "scale", "random"]}
    settings = GenerationSettings(16, True, 0.8, 0, 2, alpha=0.5, control_of="scale", control="magnitude")
    params = dict(parse_qsl(links.query(links.setup_of(EMBEDDED, "auto", "t", "preset", form, settings))))
    assert {key: params[key] for key in ("a", "of", "ctl")} == {"a": "0.5", "of": "scale", "ctl": "magnitude"}
    assert set(params) - {"v", "m", "t"} == set(links.PARAMS)  # every form field the link holds is named there
    link = links.parse(params)
    assert (link.form["alpha"], link.form["control_of"], link.form["control"]) == (0.5, "scale", "magnitude")
    old = links.parse({key: value for key, value in params.items() if key not in ("a", "of", "ctl")})
    assert (old.form["alpha"], old.form["control_of"], old.form["control"]) == (2.0, "lesion", "layer")
    with pytest.raises(FnwebError) as caught:
        links.parse({**params, "a": "11", "of": "erase", "ctl": "size"})
    text = str(caught.value)
    for part in ("its α 11 is not from 0 to 10", "random column's intervention 'erase' is none of lesion",
                 "random control 'size' is none of layer, magnitude"):
        assert part in text, part
    with pytest.raises(FnwebError, match="its α 'x' is not a number"):
        links.parse({**params, "a": "x"})


def test_bad_link_values_make_one_message_naming_each():
    params = {"m": "/etc/secrets", "t": "saved:nothex", "p": "", "c": "1,x", "cols": "lesion,bogus", "n": "5000",
              "dec": "greedy", "temp": "nan", "v": "9"}
    with pytest.raises(FnwebError) as caught:
        links.parse(params)
    text = str(caught.value)
    for part in ("another fnweb version", "'/etc/secrets' is not a Hub id", "template 'saved:nothex'",
                 "prompt is empty", "components '1,x'", "columns 'lesion,bogus'", "temperature is not a finite"):
        assert part in text, part
    assert text.startswith("This link cannot be restored:") and text.count("\n") == 0
    with pytest.raises(FnwebError, match="its max new tokens must lie between 1 and 1024"):
        links.parse({**dict(parse_qsl(links.query(a_setup()))), "n": "5000"})
    with pytest.raises(FnwebError, match="its unknown preserve scope 'bogus'"):
        links.parse({**dict(parse_qsl(links.query(a_setup()))), "scope": "bogus"})
    assert not links.is_link({"__theme": "dark"}) and links.is_link({"m": EMBEDDED})


def test_a_template_kept_in_this_page_only_cannot_go_into_a_link():
    with pytest.raises(FnwebError, match="kept in this page only"):
        links.query(a_setup(None))


# ---- comparison records ---------------------------------------------------------------------


def test_record_round_trips_through_json_and_reads_as_markdown():
    data = json.loads(to_json(record(a_setup(), a_comparison())))
    setup, comparison = from_record(data)
    assert comparison == a_comparison() and setup["components"] == [7, 8]
    text = markdown(data)
    for part in ("# fnweb comparison", "**Model**: embedded:SmolLM2-135M-Instruct", "> Paris is the capital.",
                 "## Random control (3 draws, the first shown)", "> Tokyo | maybe", "| Lesion |"):
        assert part in text, part
    assert "| Random control | 0.100 ± 0.050" in text
    with pytest.raises(FnwebError, match="Not an fnweb comparison record"):
        from_record({"format": "other"})
    with pytest.raises(FnwebError, match="Not an fnweb comparison"):
        comparison_from_dict({"prompt": "x", "columns": [{"name": "baseline"}]})


# ---- a session restored from its browser's key ---------------------------------------------


def test_templates_comparison_and_deletion_survive_a_new_session(folders):
    from fnweb.ui.saved import delete_saved, restore

    key = "v" * 32
    first = Session()
    out = restore(first, key)
    assert "visitor" not in out  # the browser sent a valid key: nothing to store
    mine = first.add(small_template(0), "built", "mine")
    first.keep("experiments", an_experiment().to_json(), {"template": mine.saved_id})
    first.add(small_template(1), "preset", "demo", key="preset-key")
    first.last_comparison = record(a_setup(), a_comparison())
    first.keep("comparisons", to_json(first.last_comparison))

    second = Session()  # a reload, or a server restart: a new session, the same browser key
    out = restore(second, key)
    assert second.names() == ["mine", "demo"] and second.get("demo").source == "preset"
    assert second.get("mine").template.to_dict() == small_template(0).to_dict()
    assert out["compare.prompt"] == "What is the capital of France? & more"
    assert out["compare.components"]["value"] == [7, 8]  # with the selected template's choices
    assert (out["compare.alpha"], out["compare.control_of"], out["compare.control"]) == (2.0, "lesion", "layer")
    assert "Paris is the capital." in out["compare.output"]
    assert "2 templates, 1 comparison, 1 experiment" in out["summary"]
    assert second.get("mine").experiment == an_experiment()  # back on its template, for the cards
    assert list(out["experiments.lesion_table"]["component"]) == ["1"] and "Done" in out["experiments.status"]

    stranger = Session()
    restore(stranger, "s" * 32)
    assert stranger.names() == []  # another browser sees nothing of it

    deleted = delete_saved(second)
    assert second.names() == [] and deleted["summary"].startswith("Nothing saved here yet")
    third = Session()
    restore(third, key)
    assert third.names() == []


def test_a_page_without_a_key_gets_one_to_store(folders):
    from fnweb.ui.saved import restore

    session = Session()
    out = restore(session, None)
    assert links_key_ok(out["visitor"]) and session.visitor_key == out["visitor"]


def links_key_ok(key) -> bool:
    from fnweb.ui.finetune_runs import valid_key

    return valid_key(key)


# ---- the preset template built at start-up -------------------------------------------------


def test_warmup_builds_once_in_the_background_and_a_visitor_follows_it(tiny_model_dir, tmp_path, one_thread):
    from fnweb.build import BuildConfig
    from fnweb.models import ModelRequest, load_model
    from fnweb.progress import StopFlag
    from fnweb.prompts import PromptSource
    from fnweb.ui.jobs import TURNS
    from fnweb.ui.presets import follow_warmup
    from fnweb.ui.warmup import WARMUP, Warmup

    request = ModelRequest(model_id=str(tiny_model_dir))
    config = BuildConfig([PromptSource("builtin:factual")], 6, 24, k=2, stability_runs=0, card_contexts=0)
    path = tmp_path / "preset.json"
    model = load_model(request).model
    session = Session()
    with TURNS.turn(model, StopFlag(), lambda place: None):  # another job holds the model: the build waits its turn
        build = WARMUP.start(request, config, "test-warmup-key", path)
        assert WARMUP.start(request, config, "test-warmup-key", path) is build  # asked twice: built once
        following = follow_warmup(session, "test-warmup-key")  # a visitor waits for it, and sees it
        shown = [next(following)["status"]]
        assert not build.finished.is_set() and session.job is not None  # Stop would end the visitor's wait
    shown += [out["status"] for out in following]
    assert build.finished.is_set() and build.error is None, build.error
    assert session.job is None  # the wait is over: nothing left for Stop
    assert all("Building the preset template (once, at start-up)" in html for html in shown)
    assert Template.load(path).component_ids == [0, 1]
    assert Warmup().start(request, config, "test-warmup-key", path) is None  # cached on disk: nothing to build
    assert list(follow_warmup(Session(), "no-such-build")) == []
