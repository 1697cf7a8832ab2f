"""Prompts from datasets: Hub names, local files and the built-in sets, as token ids.

A *source* names where rows come from (``builtin:NAME``, a local .json/.jsonl/.csv/
.parquet file, or a Hub dataset name read through ``datasets.load_dataset``). Rows
become ``Pair``s (prompt, response) by detecting the dataset's fields; pairs become
token ids through the tokenizer's chat template (or a plain format). No prompt is
ever empty: rows without text are dropped, and a source with none left is an error
that lists the fields seen.

This module knows nothing about models beyond their tokenizer.
"""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from .errors import FnwebError
from .ids import BUILTIN_PREFIX, LOCAL_SUFFIXES, builtin_name, is_builtin  # noqa: F401  (also imported from here)
from .io import parse_json, read_text

BUILTIN_DIR = Path(__file__).parent / "data" / "prompts"
FORMATS = ("auto", "chat", "alpaca", "chatml", "basic")


@dataclass(frozen=True)
class PromptSource:
    """Where prompts come from: ``builtin:NAME``, a local file, or a Hub dataset name."""

    name: str
    config: Optional[str] = None  # Hub dataset configuration
    split: str = "train"  # Hub dataset split

    def label(self) -> str:
        return self.name + (f"[{self.config}]" if self.config else "") + (
            f":{self.split}" if self.split != "train" else ""
        )


@dataclass(frozen=True)
class Pair:
    """One example: what the user says, what the assistant answers ('' when unknown)."""

    prompt: str
    response: str = ""
    system: str = ""
    source: str = ""


def builtin_sets() -> list[str]:
    """Names of the prompt sets shipped with fnweb (``builtin:<name>``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


# ---- reading rows -------------------------------------------------------------------


def _read_json(path: Path) -> list[dict]:
    text = read_text(path, f"Dataset file {path.name}")
    if not text.strip():
        return []  # reported as an empty dataset, as for any file without records
    if path.suffix == ".jsonl":
        return [parse_json(line, f"{path.name}: line {number}", one_line=True)
                for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    data = parse_json(text, path.name)
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]} wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise FnwebError(f"{path.name} holds a JSON {type(data).__name__}, not a list of records.")
    return data


def _read_csv(path: Path) -> list[dict]:
    # Decoded whole (an Excel byte-order mark dropped), newlines kept as written: csv needs them raw.
    try:
        return list(csv.DictReader(io.StringIO(read_text(path, f"Dataset file {path.name}"), newline="")))
    except csv.Error as exc:
        raise FnwebError(f"Dataset file {path.name} is not a readable CSV file: {exc}.") from exc


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError for bad files
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        detail = re.sub(r"^Could not open Parquet input source '.*?':\s*", "", detail)  # it repeats the path
        raise FnwebError(f"Dataset file {path.name} is not a readable Parquet file (damaged, or not Parquet): "
                         f"{detail}") from exc


_READERS = {".json": _read_json, ".jsonl": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def _read_hub(source: PromptSource) -> list[dict]:
    import datasets

    folder = Path(source.name).expanduser()
    try:
        if (folder / "state.json").exists():  # written by Dataset.save_to_disk
            data = datasets.load_from_disk(str(folder))
        else:
            data = datasets.load_dataset(source.name, source.config, split=source.split)
    except FileNotFoundError as exc:
        raise FnwebError(f"Dataset '{source.name}' was not found on the Hub or on disk.") from exc
    except ValueError as exc:  # unknown split or config
        raise FnwebError(f"Dataset '{source.label()}': {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # network and Hub errors come in many types
        raise FnwebError(
            f"Could not read dataset '{source.label()}' ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Check the name, config and split, and that the Hub can be reached."
        ) from exc
    return [dict(row) for row in data]


def read_rows(source: PromptSource) -> list[dict]:
    """The raw records of a source, as dicts."""
    name = source.name.strip()
    if is_builtin(name):
        set_name = builtin_name(name)
        path = BUILTIN_DIR / f"{set_name}.jsonl"
        if not path.exists():
            raise FnwebError(f"No built-in prompt set '{set_name}'; there are: {', '.join(builtin_sets())}.")
        return _read_json(path)
    path = Path(name).expanduser()
    if path.is_dir():  # a dataset folder: the datasets library reads it as it reads a Hub repo
        return _read_hub(source)
    if path.suffix.lower() in LOCAL_SUFFIXES or path.exists():
        if not path.exists():
            raise FnwebError(f"Dataset file not found: {name}")
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise FnwebError(
                f"Unsupported file type '{path.suffix or path.name}': use .json, .jsonl, .csv or .parquet."
            )
        return reader(path)
    return _read_hub(source)


# ---- fields -------------------------------------------------------------------------


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value).strip())


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in (_text(x) for x in parts) if p)


def _mcq(row: dict) -> tuple[str, str]:
    choices = list(row["choices"])
    lettered = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
    answer = row["answer"]
    index = answer if isinstance(answer, int) else "ABCDEFGH".find(str(answer).strip()[:1].upper())
    response = f"{chr(65 + index)}. {choices[index]}" if 0 <= index < len(choices) else _text(answer)
    return f"{_text(row['question'])}\n\n{lettered}", response


def _messages(row: dict, key: str) -> tuple[str, str, str]:
    """(system, prompt, response) from a chat list: the last assistant turn is the response."""
    turns = []
    for message in row[key] or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role", message.get("from", ""))
        content = message.get("content", message.get("value", ""))
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        turns.append((role, _text(content)))
    system = " ".join(c for r, c in turns if r == "system")
    turns = [(r, c) for r, c in turns if r != "system"]
    response = ""
    if turns and turns[-1][0] == "assistant":
        response = turns.pop()[1]
    prompt = "\n\n".join(c for _, c in turns)
    return system, prompt, response


# Field layouts in the order the original detected them; the first whose fields are all
# present wins. Each maps a row to (system, prompt, response).
FIELD_LAYOUTS: list[tuple[str, tuple[str, ...], Callable[[dict], tuple[str, str, str]]]] = [
    ("alpaca", ("instruction", "input", "output"), lambda r: ("", _join(r["instruction"], r["input"]), _text(r["output"]))),
    ("input/output", ("input", "output"), lambda r: ("", _text(r["input"]), _text(r["output"]))),
    ("dolly", ("instruction", "context", "response"), lambda r: ("", _join(r["instruction"], r["context"]), _text(r["response"]))),
    ("camel-ai", ("message_1", "message_2"), lambda r: ("", _text(r["message_1"]), _text(r["message_2"]))),
    ("system/user/assistant", ("system", "user", "assistant"), lambda r: (_text(r["system"]), _text(r["user"]), _text(r["assistant"]))),
    ("prompt/completion", ("prompt", "completion"), lambda r: ("", _text(r["prompt"]), _text(r["completion"]))),
    ("prompt/response", ("prompt", "response"), lambda r: ("", _text(r["prompt"]), _text(r["response"]))),
    ("multiple choice", ("question", "choices", "answer"), lambda r: ("", *_mcq(r))),
    ("question/answer", ("question", "answer"), lambda r: ("", _text(r["question"]), _text(r["answer"]))),
    ("context/response", ("context", "response"), lambda r: ("", _text(r["context"]), _text(r["response"]))),
    ("instruction/response", ("instruction", "response"), lambda r: ("", _text(r["instruction"]), _text(r["response"]))),
    ("instruction/output", ("instruction", "output"), lambda r: ("", _text(r["instruction"]), _text(r["output"]))),
    ("messages", ("messages",), lambda r: _messages(r, "messages")),
    ("conversations", ("conversations",), lambda r: _messages(r, "conversations")),
    ("text", ("text",), lambda r: ("", _text(r["text"]), "")),
    ("prompt", ("prompt",), lambda r: ("", _text(r["prompt"]), "")),
    ("question", ("question",), lambda r: ("", _text(r["question"]), "")),
    ("sentence", ("sentence",), lambda r: ("", _text(r["sentence"]), "")),
    ("content", ("content",), lambda r: ("", _text(r["content"]), "")),
]


def detect_layout(columns: Iterable[str]) -> str:
    """The name of the first field layout whose fields the columns contain."""
    present = set(columns)
    for name, fields, _ in FIELD_LAYOUTS:
        if set(fields) <= present:
            return name
    raise FnwebError(
        f"No text field found; the fields seen were: {', '.join(sorted(present)) or '(none)'}. "
        "Expected e.g. prompt/response, instruction/output, question/answer, messages or text."
    )


def rows_to_pairs(rows: Sequence[dict], source_label: str = "") -> list[Pair]:
    """Pairs from records, dropping rows whose prompt is empty."""
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        raise FnwebError(f"Dataset {source_label or ''} is empty: it has no records.".replace("  ", " "))
    layout = detect_layout(rows[0].keys())
    convert = next(fn for name, _, fn in FIELD_LAYOUTS if name == layout)
    pairs = []
    for row in rows:
        try:
            system, prompt, response = convert(row)
        except (KeyError, TypeError, IndexError):
            continue
        if prompt:
            pairs.append(Pair(prompt=prompt, response=response, system=system, source=source_label))
    if not pairs:
        raise FnwebError(
            f"Dataset {source_label} has no non-empty prompts in its '{layout}' fields "
            f"(fields seen: {', '.join(sorted(rows[0].keys()))})."
        )
    return pairs


def load_pairs(source: PromptSource) -> list[Pair]:
    """All usable pairs of one source."""
    return rows_to_pairs(read_rows(source), source.label())


def sample_pairs(sources: Sequence[PromptSource], per_source: int, seed: int = 0) -> list[Pair]:
    """Up to ``per_source`` pairs from each source (seeded shuffle), pooled in source order."""
    if not sources:
        raise FnwebError("No prompt sources chosen: pick a built-in set, a file or a Hub dataset.")
    if per_source < 1:
        raise FnwebError(f"Samples per dataset must be at least 1 (got {per_source}).")
    pooled: list[Pair] = []
    for source in sources:
        pairs = load_pairs(source)
        random.Random(seed).shuffle(pairs)
        pooled.extend(pairs[:per_source])
    return pooled


# ---- formatting ---------------------------------------------------------------------


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _messages_of(pair: Pair, with_response: bool) -> list[dict]:
    messages = [{"role": "system", "content": pair.system}] if pair.system else []
    messages.append({"role": "user", "content": pair.prompt})
    if with_response and pair.response:
        messages.append({"role": "assistant", "content": pair.response})
    return messages


def _plain_text(pair: Pair, fmt: str, with_response: bool) -> str:
    response = pair.response if with_response else ""
    if fmt == "alpaca":
        return f"### Instruction:\n{pair.prompt}\n\n### Response:\n{response}"
    if fmt == "chatml":
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in _messages_of(pair, False))
        return text + "<|im_start|>assistant\n" + (f"{response}<|im_end|>\n" if response else "")
    return pair.prompt + (f"\n{response}" if response else "")


def resolve_format(tokenizer, fmt: str = "auto") -> str:
    """``auto`` becomes ``chat`` when the tokenizer has a chat template, else ``basic``."""
    if fmt not in FORMATS:
        raise FnwebError(f"Unknown prompt format '{fmt}'; choose one of: {', '.join(FORMATS)}.")
    if fmt == "auto":
        return "chat" if has_chat_template(tokenizer) else "basic"
    if fmt == "chat" and not has_chat_template(tokenizer):
        raise FnwebError("This tokenizer has no chat template: use format auto, basic, alpaca or chatml.")
    return fmt


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # newer tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def encode_pair(tokenizer, pair: Pair, fmt: str = "auto", with_response: bool = True) -> list[int]:
    """Token ids of one example, formatted for the model (never empty)."""
    fmt = resolve_format(tokenizer, fmt)
    if fmt == "chat":
        add_prompt = not (with_response and pair.response)
        ids = _chat_ids(tokenizer, _messages_of(pair, with_response), add_generation_prompt=add_prompt)
    else:
        ids = tokenizer(_plain_text(pair, fmt, with_response))["input_ids"]
    if not ids:
        raise FnwebError(f"A prompt encoded to no tokens: {pair.prompt[:60]!r}")
    return list(ids)


def encode_prompt_and_response(tokenizer, pair: Pair, fmt: str = "auto") -> tuple[list[int], list[int]]:
    """(prompt ids up to the assistant's turn, response ids ending with EOS) for training."""
    fmt = resolve_format(tokenizer, fmt)
    if fmt == "chat":
        prompt_ids = _chat_ids(tokenizer, _messages_of(pair, False), add_generation_prompt=True)
        full_ids = _chat_ids(tokenizer, _messages_of(pair, True), add_generation_prompt=False)
    else:
        prompt_ids = tokenizer(_plain_text(pair, fmt, False))["input_ids"]
        full_ids = tokenizer(_plain_text(pair, fmt, True))["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:  # a template that rewrites earlier turns: split by length
        prompt_ids = full_ids[: len(prompt_ids)]
    response_ids = full_ids[len(prompt_ids):]
    eos = tokenizer.eos_token_id
    if eos is not None and (not response_ids or eos not in response_ids[-3:]):
        response_ids = response_ids + [eos]  # the model must learn to stop
    return prompt_ids, response_ids


def encode_pairs(tokenizer, pairs: Sequence[Pair], max_tokens: int, fmt: str = "auto") -> list[list[int]]:
    """Token ids of each pair with its response, cut to ``max_tokens``."""
    if max_tokens < 2:
        raise FnwebError(f"Max tokens per sample must be at least 2 (got {max_tokens}).")
    return [encode_pair(tokenizer, p, fmt)[:max_tokens] for p in pairs]
