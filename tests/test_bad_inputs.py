"""Bad input, table-driven: every CLI and the app's handlers answer one clear line, before the work, leaving nothing.

The table is ``tests/bad_cases.py`` (``CASES``: the command or handler, what is given,
and the message expected). A CLI case runs ``main(argv)`` in this process (a few run as real subprocesses) and
must exit 2 with exactly one error line and no traceback; a handler case must raise the
page's "Cannot do that" error (a ``FnwebError``, never "Unexpected error") and, where
the handler has a message area, show the message there. Either way nothing is left
behind: not in the output folder, not among the inputs, not in the working folder, not
in the app's session or run folders. Cases whose expectation is ``OK`` are the
original's command lines and real-world files that must work (exit 0, output written).

Placeholders in the table name the inputs made once per module (``inputs``): ``{model}``
a tiny model folder, ``{bin}`` a binary file named .jsonl, ``{latin}`` a Latin-1 CSV,
``{excel}`` a UTF-8 CSV saved by Excel (byte-order mark), ``{template}`` a template that
fits the tiny model, ``{frac}`` one with a fractional component id, ``{out}`` the case's
output folder (which must not exist afterwards unless the case is OK).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import tiny
from bad_cases import BASE, CASES, COMMANDS, DEFAULTS, FORMS, MESSAGE_SLOT, OK, Case

from fnweb.cli.buildtemplates import main as buildtemplates
from fnweb.cli.experiment import main as fnexperiment
from fnweb.cli.explain import main as explain
from fnweb.cli.fnsft import main as fnsft
from fnweb.models import available_devices
from fnweb.templates import Template, TemplateMeta

COMMAND_MAINS = {"buildtemplates": buildtemplates, "fnsft": fnsft, "fnexperiment": fnexperiment, "explain": explain}
ROOT = Path(__file__).parents[1]
BINARY = bytes(range(256)) * 8
LATIN1_CSV = "prompt,response\nUn café ?,Oui.\n".encode("latin-1")
EXCEL_CSV = "question,answer\r\n" + "".join(f"What is {i} plus {i}?,{2 * i}\r\n" for i in range(12))


def _case_id(case: Case) -> str:
    given = case.given if isinstance(case.given, str) else ",".join(f"{k}={v}" for k, v in case.given)
    where = "".join(f" {k}={getattr(case, k)}" for k in ("dataset", "tpl") if getattr(case, k))
    return f"{case.tool}:{given}{where}"[:90]


# ---- the inputs ---------------------------------------------------------------------------


def _template(width: int, components: dict, model_id: str, name: str, folder: Path) -> str:
    meta = TemplateMeta(model_id=model_id, site="neurons", n_layers=tiny.LAYERS, width=width, k=len(components),
                        threshold="percentile", threshold_value=98.0)
    return str(Template(list(range(tiny.LAYERS)), width, components, meta=meta).save(folder / name))


def _readonly(folder: Path) -> Optional[Path]:
    """A folder this process cannot write: a read-only one, or for root a kernel file system (None: none)."""
    if os.geteuid() != 0:
        locked = folder / "locked"
        locked.mkdir(mode=0o500)
        return locked
    try:
        os.close(os.open("/sys/fnweb-probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        return Path("/sys")
    os.unlink("/sys/fnweb-probe")
    return None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir) -> dict:
    folder = tmp_path_factory.mktemp("inputs")
    files = {"bin.jsonl": BINARY, "latin.csv": LATIN1_CSV, "excel.csv": EXCEL_CSV.encode("utf-8-sig"),
             "cut.parquet": b"PAR1" + BINARY[:300], "utf16.jsonl": '{"prompt": "a"}\n'.encode("utf-16"),
             "book.csv": b"PK\x03\x04\x14\x00\x06\x00" + BINARY, "empty.csv": b"", "blocker": b"x",
             "bin_template.json": BINARY,
             "frac.json": b'{"layout": {"captured_layers_sorted": [0, 1, 2], "hidden_size": 64}, '
                          b'"templates": {"0.5": {"0": [1, 2]}}}',
             "frac_channel.json": b'{"layout": {"captured_layers_sorted": [0, 1, 2], "hidden_size": 64}, '
                                  b'"templates": {"0": {"0": [1, 1.5]}}}'}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    width = tiny.INTERMEDIATE
    template = _template(width, {0: {0: [1, 2, 9], 2: [3, 4]}, 1: {1: [5, 6], 2: [7]}}, str(tiny_model_dir),
                         "template.json", folder)
    other = _template(96, {0: {0: [1]}}, "other/model", "other.json", folder)
    corrupt = folder / "corrupt-model"
    corrupt.mkdir()
    for file in Path(tiny_model_dir).iterdir():
        data = file.read_bytes()
        (corrupt / file.name).write_bytes(data[: len(data) // 2] if file.name == "model.safetensors" else data)
    noconfig = folder / "noconfig-model"
    noconfig.mkdir()
    (noconfig / "model.safetensors").write_bytes(b"")
    readonly = _readonly(tmp_path_factory.mktemp("ro"))
    return {"model": str(tiny_model_dir), "bin": str(folder / "bin.jsonl"), "latin": str(folder / "latin.csv"),
            "excel": str(folder / "excel.csv"), "cut": str(folder / "cut.parquet"),
            "utf16": str(folder / "utf16.jsonl"), "workbook": str(folder / "book.csv"),
            "empty": str(folder / "empty.csv"), "missing": str(folder / "none.csv"),
            "blocker": str(folder / "blocker"), "bin_template": str(folder / "bin_template.json"),
            "frac": str(folder / "frac.json"), "frac_channel": str(folder / "frac_channel.json"),
            "template": template, "other": other, "corrupt": str(corrupt), "noconfig": str(noconfig),
            "inputs": str(folder), "readonly": str(readonly) if readonly else None,
            "devices": ", ".join(available_devices())}


def _fill(text: str, values: dict) -> str:
    for _ in range(2):  # a case's {dataset} may itself name an input
        text = text.format(**values)
    return text


def _listing(folder: Path) -> list:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


# ---- running a command ----------------------------------------------------------------------


def _argv(case: Case, values: dict) -> list[str]:
    line = case.given if case.full else BASE[case.tool] + " " + case.given
    filled = {**values, "dataset": case.dataset or DEFAULTS["dataset"], "tpl": case.tpl or DEFAULTS["tpl"]}
    return [_fill(word, filled) for word in shlex.split(line)]


def _run_cli(case: Case, argv: list[str], cwd: Path, capsys) -> tuple[int, str]:
    if not case.subprocess:
        try:
            code = COMMAND_MAINS[case.tool](argv)
        except SystemExit as exc:  # argparse's own refusals (an int that is not one, an unknown choice)
            code = exc.code
        return code, capsys.readouterr().err
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", COMMANDS[case.tool], *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=180)
    assert done.stderr.strip().count("\n") == 0, done.stderr  # a real process: exactly one line
    return done.returncode, done.stderr


def _error_line(err: str) -> str:
    """The one line that says what was wrong: ours ('error: ...') or argparse's ('prog: error: ...')."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ") or ": error: " in line]
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0] == lines[-1], err  # the message is one line: nothing of it spills onto the next
    return errors[0]


CLI_CASES = [c for c in CASES if c.tool in COMMANDS]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("case", CLI_CASES, ids=[_case_id(c) for c in CLI_CASES])
def test_cli(case, inputs, tmp_path, capsys, monkeypatch):
    if case.skip:
        pytest.skip(case.skip)
    if "{readonly}" in case.given and inputs["readonly"] is None:
        pytest.skip("no folder here is read-only to this user")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # a default output folder (./ica_templates/, ./experiment/) would land here
    values = {**inputs, "out": str(tmp_path / "out")}
    before = _listing(Path(inputs["inputs"]))
    code, err = _run_cli(case, _argv(case, values), work, capsys)
    out = tmp_path / "out"
    if case.expect is OK:
        assert code == 0 and "Traceback" not in err, err
        assert out.is_dir() and any(out.rglob("*")), "a successful run writes its output"
        assert not list(out.rglob(".*.tmp")), "no temp files left"
    else:
        line = _error_line(err)
        expect = _fill(case.expect, values)
        assert code == 2, err
        assert line.startswith(expect) if expect.startswith("error:") else expect in line, line
        assert not out.exists() or not any(out.rglob("*")), f"left behind: {list(out.rglob('*'))}"
    assert _listing(Path(inputs["inputs"])) == before and not any(work.iterdir())


# ---- running a handler of the app -----------------------------------------------------------------

def _call(handler: str, session, template_name: str, form: dict):
    """Run a handler as the page does (its form as one record), yielding every update it sends."""
    from fnweb.ui import compare_tab, experiments_tab, finetune_tab, networks_tab, templates_tab

    calls = {
        "networks": lambda: networks_tab.draw(session, template_name, form["component"], form["bins"]),
        "compare": lambda: compare_tab.compare(session, {"template": template_name, **form}),
        "experiment": lambda: experiments_tab.run_experiment_form(session, {"template": template_name, **form}),
        "build": lambda: templates_tab.build(session, form),
        "upload": lambda: templates_tab.upload_template(session, form["file"]),
        "finetune": lambda: finetune_tab.start(session, None, {}, {**form, "run_name": ""}),
    }
    yield from calls[handler]()


APP_CASES = [c for c in CASES if c.tool in FORMS]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("case", APP_CASES, ids=[_case_id(c) for c in APP_CASES])
def test_app_handler(case, inputs, tmp_path, monkeypatch):
    import gradio as gr

    from fnweb.models import ModelRequest
    from fnweb.ui.state import Session

    runs = tmp_path / "runs"
    monkeypatch.setenv("FNWEB_RUNS_DIR", str(runs))
    session = Session(model=ModelRequest(inputs["model"]))
    name = session.add(Template.load(inputs["template"]), "uploaded", "tiny").name
    before = _listing(session.folder)
    form = dict(FORMS[case.tool])
    for key, value in case.given:
        form[key] = ([_fill(v, inputs) for v in value]
                     if isinstance(value, list) and value and isinstance(value[0], str)
                     else _fill(value, inputs) if isinstance(value, str) else value)
    try:
        if case.expect is OK:
            list(_call(case.tool, session, name, form))
            assert len(session.templates) == 2 and len(_listing(session.folder)) == len(before) + 1
            return
        shown = []
        with pytest.raises(gr.Error) as caught:
            for update in _call(case.tool, session, name, form):
                shown.append(update)
        error = caught.value
        assert error.title == "Cannot do that" and "Unexpected error" not in error.message, error.message
        assert error.message.startswith(case.expect), error.message
        slot = MESSAGE_SLOT[case.tool]
        if slot is not None:  # the message is also shown in the tab, where the result would be
            html = str(shown[-1][slot]).replace("&#x27;", "'").replace("&quot;", '"')
            assert "fn-msg-error" in html and case.expect in html, html
        assert list(session.templates) == [name] and _listing(session.folder) == before
        assert not runs.exists() or not any(runs.rglob("*.json")), list(runs.rglob("*"))
    finally:
        session.close()


def test_the_table_covers_every_command_and_handler_and_enough_cases():
    assert {c.tool for c in CASES} == set(COMMANDS) | set(FORMS)
    keys = {(c.tool, str(c.given), c.dataset, c.tpl) for c in CASES}
    assert len(CASES) >= 60 and len(keys) == len(CASES)  # no case twice
    assert sum(c.subprocess for c in CASES) >= 3 and sum(c.expect is OK for c in CASES) >= 5
