"""Template files: exact round trips, the original's format, fit checks, atomic writes."""

import json
import os

import numpy as np
import pytest
import tiny

from fnweb.archs import layout_of
from fnweb.errors import FnwebError
from fnweb.masks import MaskSpec, masked
from fnweb.templates import Template, TemplateMeta

ORIGINAL = {
    "name": "global_templates_v1",
    "layout": {"captured_layers_sorted": [0, 1, 2], "hidden_size": 32},
    "templates": {"0": {"1": [3, 7], "2": [9]}, "1": {"0": [5]}},
}


def meta(**changes):
    base = dict(model_id="tiny-llama", site="neurons", n_layers=3, width=64, k=2, threshold="percentile",
                threshold_value=98.0, datasets=[{"name": "builtin:code", "config": None, "split": "train",
                                                 "samples": 10}], seed=3, fnweb_version="0.1.0")
    base.update(changes)
    return TemplateMeta(**base)


def sample_template():
    masks = np.zeros((3 * 64, 2), dtype=bool)
    masks[[1, 70, 130, 191], 0] = True
    masks[[0, 64, 65], 1] = True
    return Template.from_masks(masks, [0, 1, 2], 64, meta())


def test_round_trip_is_exact(tmp_path):
    template = sample_template()
    path = template.save(tmp_path / "t.json")
    loaded = Template.load(path)
    assert loaded == template
    assert loaded.to_json() == path.read_text()
    assert template.components == {0: {0: [1], 1: [6], 2: [2, 63]}, 1: {0: [0], 1: [0, 1]}}


def test_file_keeps_the_original_keys(tmp_path):
    data = json.loads(sample_template().to_json())
    assert set(data) == {"name", "layout", "templates", "fnweb"}
    assert data["layout"] == {"captured_layers_sorted": [0, 1, 2], "hidden_size": 64}
    assert data["templates"]["0"] == {"0": [1], "1": [6], "2": [2, 63]}


def test_original_file_loads_and_applies_at_the_mlp_output(tmp_path):
    path = tmp_path / "global_templates.json"
    path.write_text(json.dumps(ORIGINAL))
    template = Template.load(tmp_path)  # a folder finds global_templates.json in it
    assert template.meta is None and template.component_ids == [0, 1]
    model = tiny.make_model("llama")
    assert template.infer_site(layout_of(model)) == "mlp_output"  # width 32 = hidden size
    with masked(model, template, MaskSpec((0,), "lesion")):
        pass
    assert "Component 0: 3 channels across 2 layers" in template.coverage_summary()


def test_template_for_another_model_is_refused():
    template = sample_template()
    gpt2 = tiny.make_model("gpt2")
    template.width = 128
    with pytest.raises(FnwebError, match="made for another model"):
        template.check_fits(layout_of(gpt2))
    fewer_layers = sample_template()
    fewer_layers.meta.n_layers = 5
    with pytest.raises(FnwebError, match="covers 5 layers, but this model has 3"):
        fewer_layers.check_fits(layout_of(tiny.make_model("llama")))


def test_same_shape_other_model_id_is_a_warning():
    warning = sample_template().check_fits(layout_of(tiny.make_model("llama")), model_id="other")
    assert "made on tiny-llama" in warning


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "not an fnweb template"),
    ('{"layout": {}, "templates": {}}', "malformed template"),
    ('{"layout": {"captured_layers_sorted": [0], "hidden_size": 4}, "templates": {"0": {"3": [1]}}}',
     "layer 3, which was not captured"),
    ('{"layout": {"captured_layers_sorted": [0], "hidden_size": 4}, "templates": {"0": {"0": [9]}}}',
     "channels outside"),
])
def test_bad_template_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(FnwebError, match=message):
        Template.load(path)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = sample_template().save(tmp_path / "t.json")
    before = path.read_text()

    def broken_replace(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    other = sample_template()
    other.components[0] = {0: [2]}
    with pytest.raises(OSError):
        other.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FnwebError, match="Cannot write to"):
        sample_template().save(blocker / "sub" / "t.json")


def test_coverage_rows():
    rows = sample_template().coverage()
    assert rows[0] == {"component": 0, "channels": 4, "layers": 3, "share": 4 / 192}
