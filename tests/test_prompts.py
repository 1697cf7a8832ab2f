"""Prompt sources: every file type, field layout and failure gives pairs or a clear message."""

import json

import pytest
import tiny

from fnweb.errors import FnwebError
from fnweb.prompts import (
    FIELD_LAYOUTS,
    Pair,
    PromptSource,
    builtin_sets,
    detect_layout,
    encode_pair,
    encode_prompt_and_response,
    load_pairs,
    rows_to_pairs,
    sample_pairs,
)

ROWS = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Add 2 and 3.", "input": "Show the sum.", "output": "5"}]


def write(tmp_path, name, rows):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    elif name.endswith(".csv"):
        import csv
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.csv", "d.parquet"])
def test_local_files_of_every_type(tmp_path, name):
    pairs = load_pairs(PromptSource(str(write(tmp_path, name, ROWS))))
    assert pairs[0] == Pair("Name a colour.", "Blue.", source=str(tmp_path / name))
    assert pairs[1].prompt == "Add 2 and 3.\n\nShow the sum."


def test_builtin_sets_have_several_hundred_prompts_over_five_kinds():
    names = builtin_sets()
    assert {"factual", "arithmetic", "code", "creative", "multilingual"} <= set(names)
    total = sum(len(load_pairs(PromptSource(f"builtin:{n}"))) for n in names)
    assert total >= 400


@pytest.mark.parametrize("row, layout", [
    ({"instruction": "a", "input": "b", "output": "c"}, "alpaca"),
    ({"instruction": "a", "context": "b", "response": "c"}, "dolly"),
    ({"message_1": "a", "message_2": "b"}, "camel-ai"),
    ({"system": "s", "user": "a", "assistant": "b"}, "system/user/assistant"),
    ({"prompt": "a", "completion": "b"}, "prompt/completion"),
    ({"prompt": "a", "response": "b"}, "prompt/response"),
    ({"question": "a", "answer": "b"}, "question/answer"),
    ({"question": "a", "choices": ["x", "y"], "answer": 1}, "multiple choice"),
    ({"context": "a", "response": "b"}, "context/response"),
    ({"instruction": "a", "response": "b"}, "instruction/response"),
    ({"instruction": "a", "output": "b"}, "instruction/output"),
    ({"text": "a"}, "text"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}, "conversations"),
])
def test_field_layouts_are_detected(row, layout):
    assert detect_layout(row) == layout
    pair = rows_to_pairs([row])[0]
    assert pair.prompt
    if layout not in ("text",):
        assert pair.response


def test_every_layout_has_a_test():
    tested = {"alpaca", "dolly", "camel-ai", "system/user/assistant", "prompt/completion", "prompt/response",
              "question/answer", "multiple choice", "context/response", "instruction/response",
              "instruction/output", "text", "messages", "conversations"}
    assert tested <= {name for name, _, _ in FIELD_LAYOUTS}


def test_no_text_field_lists_the_fields_seen(tmp_path):
    path = write(tmp_path, "d.jsonl", [{"label": 1, "score": 0.5}])
    with pytest.raises(FnwebError, match="fields seen were: label, score"):
        load_pairs(PromptSource(str(path)))


def test_empty_prompts_are_dropped_and_all_empty_is_an_error(tmp_path):
    pairs = rows_to_pairs([{"text": "  "}, {"text": "kept"}])
    assert [p.prompt for p in pairs] == ["kept"]
    with pytest.raises(FnwebError, match="no non-empty prompts"):
        rows_to_pairs([{"text": ""}, {"text": None}])


@pytest.mark.parametrize("content, name, message", [
    ("", "empty.jsonl", "empty"),
    ("[]", "empty.json", "empty"),
    ('{"text": "a"}\n{oops', "bad.jsonl", "line 2 is not valid JSON"),
    ('[{"text": "a"},', "bad.json", "not valid JSON"),
    ("a,b", "d.txt", "Unsupported file type '.txt'"),
    ("not parquet", "d.parquet", "not a readable Parquet file"),
])
def test_bad_files_give_clear_messages(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(FnwebError, match=message):
        load_pairs(PromptSource(str(path)))


def test_missing_file_and_unknown_builtin():
    with pytest.raises(FnwebError, match="Dataset file not found"):
        load_pairs(PromptSource("/nope/data.jsonl"))
    with pytest.raises(FnwebError, match="No built-in prompt set 'nope'"):
        load_pairs(PromptSource("builtin:nope"))


def test_hub_dataset_not_found_is_a_clear_error():
    with pytest.raises(FnwebError, match="no-such-user/no-such-dataset"):
        load_pairs(PromptSource("no-such-user/no-such-dataset"))


def test_hub_path_reads_through_the_datasets_library(tmp_path):
    # A local dataset folder goes through datasets.load_dataset exactly as a Hub name does.
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write(folder, "train.jsonl", [{"question": "Why?", "answer": "Because."}])
    pairs = load_pairs(PromptSource(str(folder)))
    assert pairs == [Pair("Why?", "Because.", source=str(folder))]


def test_sampling_is_seeded_and_pools_sources():
    sources = [PromptSource("builtin:code"), PromptSource("builtin:factual")]
    a = sample_pairs(sources, 5, seed=1)
    assert len(a) == 10 and a == sample_pairs(sources, 5, seed=1)
    assert a != sample_pairs(sources, 5, seed=2)
    with pytest.raises(FnwebError, match="No prompt sources"):
        sample_pairs([], 5)


def test_chat_template_is_used_when_present():
    tokenizer = tiny.make_tokenizer(chat=True)
    ids = encode_pair(tokenizer, Pair("Hello", "Hi"))
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\nHello<|im_end|>") and "assistant\nHi" in text


def test_tokenizer_without_chat_template_still_gets_the_prompt():
    tokenizer = tiny.make_tokenizer(chat=False)
    ids = encode_pair(tokenizer, Pair("Hello there", "Hi"))
    assert tokenizer.decode(ids) == "Hello there\nHi"
    with pytest.raises(FnwebError, match="no chat template"):
        encode_pair(tokenizer, Pair("Hello"), fmt="chat")


def test_training_split_ends_the_response_with_eos():
    tokenizer = tiny.make_tokenizer(chat=True)
    prompt, response = encode_prompt_and_response(tokenizer, Pair("Hello", "Hi"))
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token_id in response[-3:]
    plain = tiny.make_tokenizer(chat=False)
    _, response = encode_prompt_and_response(plain, Pair("Hello", "Hi"))
    assert response[-1] == plain.eos_token_id
