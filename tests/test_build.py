"""The whole pipeline on tiny models of every architecture, the CLI, and its bad inputs."""

import json
import subprocess
import sys

import pytest
import tiny
import torch

from fnweb.archs import ARCHITECTURES, layout_of
from fnweb.build import BuildConfig, build_template
from fnweb.cli.buildtemplates import main as buildtemplates
from fnweb.errors import FnwebError, Stopped
from fnweb.masks import MaskSpec, masked
from fnweb.models import LoadedModel, ModelRequest, load_model
from fnweb.progress import StopFlag
from fnweb.prompts import PromptSource
from fnweb.templates import Template

SOURCES = [PromptSource("builtin:factual"), PromptSource("builtin:code")]


def small_config(**changes):
    config = dict(sources=SOURCES, samples_per_dataset=12, max_tokens=48, k=3, seed=0)
    config.update(changes)
    return BuildConfig(**config)


def test_the_tiny_models_cover_every_architecture_in_the_table():
    assert sorted(tiny.ARCHS) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch", tiny.ARCHS)
@pytest.mark.parametrize("site", ["neurons", "mlp_output"])
def test_every_architecture_builds_a_template_and_applies_a_mask(tokenizer, arch, site):
    assert arch in ARCHITECTURES
    lm = LoadedModel(tiny.make_model(arch), tokenizer, ModelRequest(model_id=f"tiny-{arch}"))
    result = build_template(lm, small_config(site=site))
    template = result.template
    layout = layout_of(lm.model)
    spec = ARCHITECTURES[arch]
    # the table's, no fallback
    assert (layout.model_type, layout.down_proj, layout.mlp) == (arch, spec.down_proj, spec.mlp)
    module_names = {name.rsplit(".", 1)[-1] for name, _ in lm.model.named_modules()}
    assert set(spec.lora_targets) <= module_names
    assert template.width == layout.width(site) and template.layers == list(range(layout.n_layers))
    assert template.meta.site == site and template.meta.architecture == layout.model_type
    assert all(row["channels"] > 0 for row in template.coverage())
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = lm.model(ids).logits
        with masked(lm.model, template, MaskSpec((0,), "preserve")):
            during = lm.model(ids).logits
        assert not torch.allclose(before, during)
        assert torch.equal(lm.model(ids).logits, before)


@pytest.mark.parametrize("arch", tiny.MIXTURES_OF_EXPERTS)
def test_a_mixture_of_experts_is_refused_with_the_reason(arch):
    with pytest.raises(FnwebError,
                       match=f"'{arch}' is a mixture of experts \\(4 experts per block.*Choose a dense model"):
        layout_of(tiny.make_model(arch))


def test_same_seed_same_template(tiny_lm):
    a = build_template(tiny_lm, small_config(seed=4)).template
    b = build_template(tiny_lm, small_config(seed=4)).template
    a.meta.created = b.meta.created
    assert a == b
    assert a.meta.datasets[0] == {"name": "builtin:factual", "config": None, "split": "train", "samples": 12}


def test_progress_reports_tokens_and_phases(tiny_lm):
    events = []
    result = build_template(tiny_lm, small_config(), progress=events.append)
    phases = [e.phase for e in events]
    assert phases[0] == "loading" and phases[-1] == "done"
    assert {"capturing", "decomposing", "stability", "thresholding"} <= set(phases)
    captured = [e for e in events if e.phase == "capturing"]
    assert captured[-1].done == captured[-1].total == result.n_tokens


def test_the_template_records_each_components_stability(tiny_lm, tmp_path):
    result = build_template(tiny_lm, small_config(stability_runs=3), output=tmp_path / "t.json")
    stability = Template.load(result.path).stability()
    assert stability["runs"] == 3 and len(stability["correlation"]) == len(stability["mask_iou"]) == 3
    assert all(0.0 <= v <= 1.0 for v in stability["correlation"] + stability["mask_iou"])
    assert "stability" in result.template.coverage_summary()
    plain = build_template(tiny_lm, small_config(stability_runs=0)).template
    assert plain.stability() is None and "stability" not in plain.coverage_summary()


def test_stop_raises_and_writes_nothing(tiny_lm, tmp_path):
    stop = StopFlag()

    def stop_while_capturing(event):
        if event.phase == "capturing" and event.done > 0:
            stop.set()

    output = tmp_path / "t.json"
    with pytest.raises(Stopped):
        build_template(tiny_lm, small_config(), output=output, progress=stop_while_capturing, stop=stop)
    assert not output.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("changes, message", [
    (dict(sources=[]), "No prompt sources"),
    (dict(k=0), "k must lie between"),
    (dict(k=5000), "k must lie between"),
    (dict(max_tokens=1), "Max tokens"),
    (dict(stability_runs=-1), "Stability re-runs must lie between 0 and 100"),
    (dict(threshold_value=100.0), "strictly between 0 and 100"),
    (dict(threshold="zscore", threshold_value=-1), "alpha must be positive"),
    (dict(samples_per_dataset=2, max_tokens=4, k=20), "only 16 tokens were captured"),
    (dict(sources=[PromptSource("builtin:nope")]), "No built-in prompt set"),
])
def test_bad_build_settings(tiny_lm, changes, message):
    with pytest.raises(FnwebError, match=message):
        build_template(tiny_lm, small_config(**changes))


def test_local_model_folder_loads(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    assert lm.summary()["layers"] == 3 and lm.summary()["neurons_per_layer"] == 64
    assert "llama, 3 layers x 64 neurons" in lm.summary_line()


@pytest.mark.parametrize("model_id, message", [
    ("/no/such/folder", "No model folder"),
    ("no-such-org/no-such-model-xyz", "Could not load model 'no-such-org/no-such-model-xyz'"),
])
def test_unknown_model_is_a_clear_error(model_id, message):
    with pytest.raises(FnwebError, match=message):
        load_model(model_id)


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(FnwebError, match="without config.json"):
        load_model(str(tmp_path))


def test_cli_builds_and_prints_the_coverage_summary(tiny_model_dir, tmp_path, capsys):
    code = buildtemplates([str(tiny_model_dir), "builtin:code", "builtin:factual",
                           "--ica_template_samples_per_ds", "10", "--ica_components", "3",
                           "--max_seq_length", "40", "--ica_template_output", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    path = tmp_path / tiny_model_dir.name / "builtin-code__builtin-factual" / "global_templates.json"
    assert f"Templates saved to: {path}" in out
    assert "Component 0:" in out and "channels across 3 layers" in out
    template = Template.load(path)
    assert template.meta.k == 3 and len(template.components) == 3


def test_cli_named_form_and_zscore(tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "t.json"
    code = buildtemplates(["--model_name_or_path", str(tiny_model_dir), "--ica_build_templates_from",
                           "builtin:creative", "--ica_template_samples_per_ds", "10", "--ica_components", "2",
                           "--threshold", "zscore", "--site", "mlp_output", "--output_file", str(output),
                           "--quiet"])
    assert code == 0
    data = json.loads(output.read_text())
    assert data["fnweb"]["threshold"] == "zscore" and data["fnweb"]["site"] == "mlp_output"


@pytest.mark.parametrize("args, message", [
    (["builtin:code", "--ica_percentile", "100"], "strictly between 0 and 100"),
    (["builtin:code", "--ica_components", "900"], "k must lie between"),
    (["data.xyz"], "Unsupported file type"),
    ([], "No datasets given"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.xyz").write_text("x")
    code = buildtemplates([str(tiny_model_dir), *args, "--ica_template_output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_runs_as_a_module_with_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fnweb.cli.buildtemplates", "/no/such/model", "builtin:code"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ,
                               "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: No model folder at '/no/such/model'."
