"""Background runs: start, poll events, stop, re-attach from disk; run states and events files."""

import json
import time

import pytest
from ftkit import save_planted, small_config

from fnweb.errors import FnwebError
from fnweb.finetune import RunManager, list_runs, read_events
from fnweb.finetune.runs import RunWriter, read_state

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread


def poll_until_done(manager, run_id, timeout=120):
    """Poll events the way a UI timer does, resuming from the last sequence number."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = manager.events(run_id, since=len(seen))
        assert [e["seq"] for e in new] == list(range(len(seen), len(seen) + len(new)))
        seen += new
        if any(e["event"] == "end" for e in new):
            return seen
        time.sleep(0.05)
    raise AssertionError("the run did not end")


def test_a_background_run_can_be_polled_stopped_and_reattached(tiny_lm, tmp_path):
    manager = RunManager(tmp_path / "runs")
    template = save_planted(tiny_lm.model, tmp_path)
    first = manager.start(small_config("ignored", mask_mode="preserve", template_path=template, component_ids=[2]),
                          tiny_lm, run_id="plain-preserve")
    assert first == "plain-preserve" and manager.info(first).state == "running"
    events = poll_until_done(manager, first)
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 7))
    assert events[-1]["state"] == "finished" and manager.wait(first).state == "finished"

    second = manager.start(small_config("ignored", max_steps=100_000), tiny_lm)
    with pytest.raises(FnwebError, match="already running"):
        manager.start(small_config("ignored"), tiny_lm)
    while not any(e["event"] == "step" for e in manager.events(second)):
        time.sleep(0.05)
    manager.stop(second)
    info = manager.wait(second, timeout=60)
    assert info.state == "stopped" and 1 <= info.step < 100_000
    assert "adapter" in info.message and (info.folder / "adapter_model.safetensors").exists()

    # A page reload: a new view of the same base folder finds both runs and replays their events.
    again = RunManager(tmp_path / "runs")
    runs = {r.run_id: r for r in again.runs()}
    assert runs[first].state == "finished" and runs[second].state == "stopped"
    row = runs[first].row()
    assert row["task_loss_after"] < row["task_loss_before"] and row["mask"].startswith("preserve")
    assert again.events(first) == events
    with pytest.raises(FnwebError, match="not running"):
        again.stop(first)


def test_bad_input_is_reported_by_start_and_leaves_no_run(tiny_lm, tmp_path):
    manager = RunManager(tmp_path / "runs")
    with pytest.raises(FnwebError, match="Learning rate"):
        manager.start(small_config("ignored", learning_rate=-1.0), tiny_lm)
    with pytest.raises(FnwebError, match="Run id"):
        manager.start(small_config("ignored"), tiny_lm, run_id="../escape")
    assert manager.runs() == []


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path):
    folder = tmp_path / "runs" / "ghost"
    writer = RunWriter.create(folder, overwrite=False)
    writer.write_json("train_config.json", {"mask_mode": "none"})
    writer.set_state("running", step=3, total_steps=10)
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "pid": 2 ** 22 + 12345}))  # no such process
    assert read_state(folder)["state"] == "failed" and "Interrupted" in read_state(folder)["message"]
    assert [r.state for r in list_runs(tmp_path / "runs")] == ["failed"]


def test_events_file_is_tailable_line_by_line(tmp_path):
    writer = RunWriter.create(tmp_path / "run", overwrite=False)
    for step in range(1, 4):
        writer.event({"event": "step", "step": step})
    with open(tmp_path / "run" / "metrics.jsonl", "a") as out:
        out.write('{"event": "step", "st')  # a line still being written
    assert [e["step"] for e in read_events(tmp_path / "run")] == [1, 2, 3]
    assert [e["step"] for e in read_events(tmp_path / "run", since=2)] == [3]
