"""Users' files: one reading path for text (UTF-8 with or without a BOM, else one clear line), and output probes."""

import json
import os
from pathlib import Path

import pytest

from fnweb.errors import FnwebError
from fnweb.io import check_writable_file, check_writable_folder, read_json, read_text
from fnweb.prompts import PromptSource, load_pairs
from fnweb.templates import Template

LATIN1_CSV = "question,answer\nQu'est-ce qu'un café ?,Une boisson.\n".encode("latin-1")
BINARY = bytes(range(256)) * 8  # NUL and every control byte


def written(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- the reader ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    "prompt,response\nhé,ok\n".encode("utf-8"),
    "prompt,response\nhé,ok\n".encode("utf-8-sig"),  # Excel's "CSV UTF-8" starts with a byte-order mark
])
def test_utf8_with_or_without_a_byte_order_mark_reads_the_same(tmp_path, data):
    assert read_text(written(tmp_path, "d.csv", data)) == "prompt,response\nhé,ok\n"


@pytest.mark.parametrize("data, message", [
    (BINARY, "d.txt looks like a binary file, not text: check that you chose the right file."),
    (b"PK\x03\x04\x14\x00\x06\x00" + BINARY, "d.txt looks like a binary file, not text (a zip archive, such as "
                                              "an Excel workbook: export it as 'CSV UTF-8' instead)."),
    (LATIN1_CSV, "d.txt is not UTF-8 (byte 0xE9 on line 2); save it as UTF-8"),
    ("[1]".encode("utf-16"), "d.txt is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8."),
])
def test_what_is_not_utf8_text_is_named_in_one_line(tmp_path, data, message):
    with pytest.raises(FnwebError) as caught:
        read_text(written(tmp_path, "d.txt", data))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    assert read_json(written(tmp_path, "ok.json", '\ufeff{"a": 1}'.encode("utf-8"))) == {"a": 1}
    with pytest.raises(FnwebError, match=r"^My file is empty: it holds no JSON\.$"):
        read_json(written(tmp_path, "e.json", b"  \n"), "My file")
    with pytest.raises(FnwebError, match=r"^bad.json is not valid JSON: Expecting ',' delimiter at line 1, "
                                         r"column 9\.$"):
        read_json(written(tmp_path, "bad.json", b'{"a": 1 "b": 2}'))
    with pytest.raises(FnwebError, match=r"^gone.json was not found: "):
        read_json(tmp_path / "gone.json")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FnwebError, match=r"^folder is a folder, not a file"):
        read_json(tmp_path / "folder")


# ---- datasets -----------------------------------------------------------------------


def test_excel_csv_with_a_byte_order_mark_finds_its_first_column(tmp_path):
    path = written(tmp_path, "excel.csv", "question,answer\r\nWhat is 2+2?,4\r\n".encode("utf-8-sig"))
    pairs = load_pairs(PromptSource(str(path)))
    assert [(p.prompt, p.response) for p in pairs] == [("What is 2+2?", "4")]  # 'question' was found


def test_byte_order_mark_in_jsonl_and_json(tmp_path):
    lines = written(tmp_path, "d.jsonl", '{"prompt": "a", "response": "b"}\n'.encode("utf-8-sig"))
    whole = written(tmp_path, "d.json", '[{"prompt": "a", "response": "b"}]'.encode("utf-8-sig"))
    assert load_pairs(PromptSource(str(lines)))[0].prompt == load_pairs(PromptSource(str(whole)))[0].prompt == "a"


def _parquet_bytes() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt": f"p{i}", "response": "r"} for i in range(50)]), buffer)
    return buffer.getvalue()


def _damaged_parquet() -> bytes:
    data = bytearray(_parquet_bytes())
    data[20:200] = bytes(180)  # zeroes over the first column's page header
    return bytes(data)


# bin.jsonl, latin.csv and empty.csv go through the commands and the app in tests/test_bad_inputs.py.
@pytest.mark.parametrize("name, data, message", [
    ("bin.csv", BINARY, "Dataset file bin.csv looks like a binary file, not text"),
    ("bin.json", b"PAR1" + BINARY, "Dataset file bin.json looks like a binary file, not text (a Parquet file: "
                                   "give it the .parquet extension)."),
    ("latin.jsonl", '{"prompt": "café"}\n'.encode("latin-1"), "Dataset file latin.jsonl is not UTF-8"),
    ("empty.json", b"", "Dataset empty.json is empty: it has no records."),
    ("empty.parquet", b"", "Dataset file empty.parquet is not a readable Parquet file (damaged, or not Parquet): "
                           "Parquet file size is 0 bytes"),
    ("cut.parquet", _parquet_bytes()[:400], "Dataset file cut.parquet is not a readable Parquet file"),
    ("damaged.parquet", _damaged_parquet(), "Dataset file damaged.parquet is not a readable Parquet file"),
])
def test_bad_dataset_files_give_one_clear_line(tmp_path, name, data, message):
    with pytest.raises(FnwebError) as caught:
        load_pairs(PromptSource(str(written(tmp_path, name, data))))
    assert str(caught.value).replace(str(tmp_path) + "/", "").startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


# ---- templates and run folders ------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    (BINARY, "Template file t.json looks like a binary file"),
    ('{"name": "é"}'.encode("latin-1"), "Template file t.json is not UTF-8"),
    (b"", "Template file t.json is empty"),
])
def test_bad_template_files_give_one_clear_line(tmp_path, data, message):
    with pytest.raises(FnwebError, match=f"^{message}"):
        Template.load(written(tmp_path, "t.json", data))


def test_template_with_a_byte_order_mark_loads(tmp_path):
    text = json.dumps({"layout": {"captured_layers_sorted": [0], "hidden_size": 4}, "templates": {"0": {"0": [1]}}})
    assert Template.load(written(tmp_path, "t.json", text.encode("utf-8-sig"))).components == {0: {0: [1]}}


def test_run_folder_json_that_is_binary_is_named(tmp_path):
    from fnweb.finetune.runs import read_run

    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("adapter_config.json", "template.json", "train_config.json", "adapter_model.safetensors"):
        (folder / name).write_text("{}")
    (folder / "mask.json").write_bytes(BINARY)
    with pytest.raises(FnwebError, match=r"^The run folder: mask.json looks like a binary file"):
        read_run(folder)


# ---- output probes ------------------------------------------------------------------


def test_probes_leave_nothing_behind_and_create_nothing(tmp_path):
    check_writable_folder(tmp_path)
    check_writable_folder(tmp_path / "new" / "deeper")  # probed where it would be created
    check_writable_file(tmp_path / "new" / "t.json")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    blocker = written(tmp_path, "blocker", b"x")
    with pytest.raises(FnwebError, match=r"^Cannot write the output folder .*blocker/out: .*blocker is a file, not a "
                                         r"folder\. Choose another output path\.$"):
        check_writable_folder(blocker / "out")
    with pytest.raises(FnwebError, match=r"^Cannot write the output file .*: it is a folder\. Give a file name"):
        check_writable_file(tmp_path)
    with pytest.raises(FnwebError, match="blocker is a file, not a folder"):
        check_writable_file(blocker / "t.json")
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def unwritable_folder(tmp_path):
    """A folder this process cannot write: a read-only one, or for root a kernel file system."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
        return folder
    try:
        os.close(os.open("/sys/fnweb-probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        return Path("/sys")
    os.unlink("/sys/fnweb-probe")
    pytest.skip("no folder here is read-only to root")


def test_read_only_folder_is_refused(tmp_path):
    folder = unwritable_folder(tmp_path)
    try:
        with pytest.raises(FnwebError, match=r"^Cannot write the output folder .*out: .* in .*\. Choose a writable"):
            check_writable_folder(folder / "out")
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o700)


# ---- JSON, atomic writes and plain records ------------------------------------------


def test_a_json_lines_error_names_the_line_and_its_column(tmp_path):
    from fnweb.io import parse_json

    with pytest.raises(FnwebError, match=r"^d.jsonl: line 2 is not valid JSON: Expecting value at column 7\.$"):
        parse_json('{"a": }', "d.jsonl: line 2", one_line=True)


def test_write_atomic_writes_text_and_bytes_whole_and_leaves_no_temp_file(tmp_path):
    from fnweb.io import write_atomic

    write_atomic(tmp_path / "deep" / "t.txt", "é\n")
    write_atomic(tmp_path / "deep" / "b.png", b"\x89PNG\r\n")
    assert (tmp_path / "deep" / "t.txt").read_bytes() == "é\n".encode("utf-8")
    assert (tmp_path / "deep" / "b.png").read_bytes() == b"\x89PNG\r\n"
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["b.png", "t.txt"]


def test_plain_records_round_trip_field_by_field_and_bad_values_name_the_field():
    from dataclasses import dataclass, field
    from typing import Literal, Optional

    from fnweb.io import from_plain, to_plain

    @dataclass(frozen=True)
    class Inner:
        name: str
        scale: float = 1.0

    @dataclass(frozen=True)
    class Outer:
        ids: tuple[int, ...]
        seed: Optional[int] = None
        kind: Literal["a", "b"] = "a"
        flag: bool = False
        inner: Optional[Inner] = None
        tags: list[str] = field(default_factory=list)

    record = Outer((3, 1), 7, "b", True, Inner("x", 0.5), ["t"])
    data = json.loads(json.dumps(to_plain(record)))
    assert data == {"ids": [3, 1], "seed": 7, "kind": "b", "flag": True, "inner": {"name": "x", "scale": 0.5},
                    "tags": ["t"]}
    assert from_plain(Outer, data, "f.json") == record
    assert from_plain(Outer, {"ids": [1], "later": "ignored"}, "f.json") == Outer((1,))  # absent: the defaults
    assert from_plain(Outer, {"ids": [2.0], "inner": {"name": "y", "scale": 2}}, "f.json") == \
        Outer((2,), inner=Inner("y", 2.0))  # JSON numbers as the record's kinds
    for bad, message in [({"ids": [1.5]}, r"^f.json: ids\[0\] must be a whole number, not float 1.5\.$"),
                         ({"ids": [1], "seed": True}, r"^f.json: seed must be a whole number, not bool True\.$"),
                         ({"ids": [1], "kind": "c"}, r"^f.json: kind must be one of 'a', 'b', not str 'c'\.$"),
                         ({"ids": [1], "inner": {"name": 3}}, r"^f.json: inner: name must be a string, not int 3\.$"),
                         ({"ids": "1"}, r"^f.json: ids must be a list, not str '1'\.$"),
                         ([], r"^f.json must be a JSON object, not list \[\]\.$")]:
        with pytest.raises(FnwebError, match=message):
            from_plain(Outer, bad, "f.json")
