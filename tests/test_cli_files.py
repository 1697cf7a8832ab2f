"""Bad files and unwritable outputs, through the three CLIs and the Templates tab: one line, before the work.

Each CLI case asserts exit code 2, a single ``error:`` line with the expected message,
no traceback, and that nothing was written. The app cases call the Templates tab's
handlers with a tiny model loaded, as the page does, and check the message shown in place.
"""

import numpy as np
import pytest

from fnweb.cli.buildtemplates import main as buildtemplates
from fnweb.cli.experiment import main as fnexperiment
from fnweb.cli.fnsft import main as fnsft
from fnweb.templates import Template

BINARY = bytes(range(256)) * 8
LATIN1_CSV = "prompt,response\nUn café ?,Oui.\n".encode("latin-1")


def files(tmp_path) -> dict:
    """Bad inputs in a folder of their own (so 'nothing written' can be checked on the output folder)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    made = {"bin.jsonl": BINARY, "latin.csv": LATIN1_CSV, "cut.parquet": b"PAR1" + BINARY[:300], "blocker": b"x",
            "bin_template.json": BINARY}
    for name, data in made.items():
        (folder / name).write_bytes(data)
    tiny_template = Template.from_masks(np.eye(3 * 64, 2, dtype=np.uint8), [0, 1, 2], 64)
    tiny_template.save(folder / "template.json")
    return {name: str(folder / name) for name in [*made, "template.json"]}


def one_error_line(capsys, code: int, message: str) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err and len(errors) == 1, err
    assert message in errors[0], errors[0]
    return errors[0]


# ---- buildtemplates ---------------------------------------------------------------------


@pytest.mark.parametrize("dataset, message", [
    ("bin.jsonl", "error: Dataset file bin.jsonl looks like a binary file, not text"),
    ("latin.csv", "error: Dataset file latin.csv is not UTF-8 (byte 0xE9 on line 2); save it as UTF-8"),
    ("cut.parquet", "error: Dataset file cut.parquet is not a readable Parquet file (damaged, or not Parquet)"),
])
def test_buildtemplates_bad_dataset_files(tiny_model_dir, tmp_path, capsys, dataset, message):
    given = files(tmp_path)
    out = tmp_path / "out"
    code = buildtemplates([str(tiny_model_dir), given[dataset], "--ica_template_output", str(out), "--quiet"])
    assert one_error_line(capsys, code, message).startswith(message)
    assert not out.exists()


@pytest.mark.parametrize("output, message", [
    (["--output_file", "{blocker}/sub/t.json"], "error: Cannot write the template file {blocker}/sub/t.json: "
                                                "{blocker} is a file, not a folder. Choose another output path."),
    (["--ica_template_output", "{blocker}"], "is a file, not a folder"),
    (["--output_file", "{tmp}"], "error: Cannot write the template file {tmp}: it is a folder. Give a file name"),
])
def test_buildtemplates_unwritable_output_fails_before_the_model_loads(tmp_path, capsys, output, message):
    given = files(tmp_path)
    fill = {"blocker": given["blocker"], "tmp": str(tmp_path)}
    before = sorted(tmp_path.rglob("*"))
    # The model does not exist: the output is checked first, so its error is the one reported.
    code = buildtemplates(["/no/such/model", "builtin:code", *[a.format(**fill) for a in output], "--quiet"])
    one_error_line(capsys, code, message.format(**fill))
    assert sorted(tmp_path.rglob("*")) == before


# ---- fnexperiment -----------------------------------------------------------------------


def test_fnexperiment_unwritable_output_fails_first(tmp_path, capsys):
    given = files(tmp_path)
    code = fnexperiment(["/no/such/model", "/no/such/template.json", "builtin:code",
                         "--output", given["blocker"] + "/results", "--quiet"])
    one_error_line(capsys, code, f"error: Cannot write the output folder {given['blocker']}/results: ")


def test_fnexperiment_bad_template_and_heldout_files(tiny_model_dir, tmp_path, capsys):
    given = files(tmp_path)
    out = tmp_path / "out"
    code = fnexperiment([str(tiny_model_dir), given["bin_template.json"], "builtin:code", "--output", str(out)])
    one_error_line(capsys, code, "error: Template file bin_template.json looks like a binary file, not text")
    code = fnexperiment([str(tiny_model_dir), given["template.json"], given["latin.csv"], "--output", str(out),
                         "--quiet", "--draws", "1", "--no_curve"])
    one_error_line(capsys, code, "error: Dataset file latin.csv is not UTF-8")
    assert not out.exists()


# ---- fnsft ------------------------------------------------------------------------------


def _fnsft(model, dataset, output, *extra):
    return fnsft(["--model_name_or_path", str(model), "--dataset_name_or_path", dataset, "--output_dir", str(output),
                  "--max_steps", "2", "--quiet", *extra])


def test_fnsft_unwritable_output_dir_fails_first(tmp_path, capsys):
    given = files(tmp_path)
    code = _fnsft("/no/such/model", "builtin:code", given["blocker"] + "/run")
    one_error_line(capsys, code, f"error: Cannot write the run folder {given['blocker']}/run: ")


@pytest.mark.parametrize("dataset, extra, message", [
    ("bin.jsonl", [], "error: Dataset file bin.jsonl looks like a binary file, not text"),
    ("latin.csv", [], "error: Dataset file latin.csv is not UTF-8"),
    ("builtin:code", ["--device", "tpu9"], "error: Unknown device 'tpu9'. Available here: auto, cpu"),
])
def test_fnsft_bad_inputs_write_nothing(tiny_model_dir, tmp_path, capsys, dataset, extra, message):
    given = files(tmp_path)
    run = tmp_path / "run"
    code = _fnsft(tiny_model_dir, given.get(dataset, dataset), run, *extra)
    one_error_line(capsys, code, message)
    assert not run.exists()


# ---- the Templates tab ------------------------------------------------------------------


def _shown(handler, *args) -> tuple[str, str]:
    """(the message shown in the page, the error raised to Gradio) of a handler that fails."""
    import gradio as gr

    shown = []
    with pytest.raises(gr.Error) as caught:
        for update in handler(*args):
            shown.append(update["progress"])
    return shown[-1], caught.value.message


@pytest.mark.parametrize("name, message", [
    ("bin_template.json", "Template file bin_template.json looks like a binary file, not text"),
    ("latin.csv", "Template file latin.csv is not UTF-8 (byte 0xE9 on line 2); save it as UTF-8"),
])
def test_template_upload_of_a_bad_file_shows_the_message_in_place(tiny_model_dir, tmp_path, name, message):
    from fnweb.models import ModelRequest
    from fnweb.ui.state import Session
    from fnweb.ui.templates_tab import upload_template

    session = Session(model=ModelRequest(str(tiny_model_dir)))
    html, error = _shown(upload_template, session, files(tmp_path)[name])
    assert error.startswith(message) and "Unexpected error" not in error
    assert "fn-msg-error" in html and message in html.replace("&#x27;", "'")
    assert session.templates == {}


@pytest.mark.parametrize("name, message", [
    ("bin.jsonl", "Dataset file bin.jsonl looks like a binary file, not text"),
    ("latin.csv", "Dataset file latin.csv is not UTF-8"),
])
def test_building_from_a_bad_uploaded_dataset_shows_the_message_in_place(tiny_model_dir, tmp_path, name, message):
    from fnweb.models import ModelRequest
    from fnweb.ui.state import Session
    from fnweb.ui.templates_tab import build

    session = Session(model=ModelRequest(str(tiny_model_dir)))
    html, error = _shown(build, session, dict(builtin=[], hub="", files=[files(tmp_path)[name]], samples=10,
                                              max_tokens=32, k=2, site="neurons", threshold="percentile",
                                              threshold_value=98.0, seed=0))
    assert error.startswith(message) and "Unexpected error" not in error
    assert "fn-msg-error" in html and message in html
    assert session.templates == {}
