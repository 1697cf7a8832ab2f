"""Users' files in and out: text read as UTF-8, JSON, atomic writes, plain records, and writability probes.

Every text file a person hands fnweb (datasets, templates, run folders' JSON) is read
through ``read_text``: UTF-8 with or without a byte-order mark (Excel writes one), and
otherwise one clear sentence saying the file is binary, UTF-16, or in another encoding,
and what to do. Every JSON document goes through ``read_json`` (a file) or ``parse_json``
(text already read), so a bad one is always said the same way. Writes (``write_atomic``,
text or bytes) go to a temp file in the same folder and are renamed into place, so a
reader never sees half a file. ``to_plain`` and ``from_plain`` turn a dataclass record
into JSON-ready values and back, field by field from its type hints, so a file format
built on a record gains a field when the record does. ``check_writable_folder`` and
``check_writable_file`` probe an output location before long work starts, leaving
nothing behind.

This module knows nothing about what the files hold.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

from .errors import FnwebError

SNIFF_BYTES = 8192  # how much of a file the binary check looks at
TEXT_CONTROLS = set(b"\t\n\r\f\v\b\x1b")  # control bytes that do occur in text files

# Signatures of binary formats people save under a text extension, and what to do about them.
BINARY_KINDS = (
    (b"PK\x03\x04", "a zip archive, such as an Excel workbook: export it as 'CSV UTF-8' instead"),
    (b"PAR1", "a Parquet file: give it the .parquet extension"),
    (b"\x1f\x8b", "a gzip archive: unpack it first"),
    (b"%PDF", "a PDF document"),
    (b"SQLite format 3", "an SQLite database"),
)
UTF16_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _subject(path: Path, what: Optional[str]) -> str:
    return what or path.name


def read_bytes(path: str | os.PathLike, what: Optional[str] = None) -> bytes:
    """The file's bytes, or an error naming the file and why it cannot be read."""
    path = Path(path)
    subject = _subject(path, what)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FnwebError(f"{subject} was not found: {path}") from exc
    except IsADirectoryError as exc:
        raise FnwebError(f"{subject} is a folder, not a file: {path}") from exc
    except PermissionError as exc:
        raise FnwebError(f"{subject} cannot be read: permission denied ({path}).") from exc
    except OSError as exc:
        raise FnwebError(f"{subject} cannot be read: {exc.strerror or exc} ({path}).") from exc


def _looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if byte < 32 and byte not in TEXT_CONTROLS)
    return controls > len(head) * 0.05


def decode_text(data: bytes, subject: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or an error saying what the bytes are instead."""
    if data.startswith(UTF16_BOMS):
        raise FnwebError(f"{subject} is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8.")
    head = data[:SNIFF_BYTES]
    if _looks_binary(head):
        kind = next((name for magic, name in BINARY_KINDS if head.startswith(magic)), None)
        raise FnwebError(f"{subject} looks like a binary file, not text" + (f" ({kind})." if kind else
                         ": check that you chose the right file."))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FnwebError(
            f"{subject} is not UTF-8 (byte 0x{data[exc.start]:02X} on line {line}); save it as UTF-8 "
            "(in Excel: Save As 'CSV UTF-8'; in an editor: encoding UTF-8)."
        ) from exc


def read_text(path: str | os.PathLike, what: Optional[str] = None) -> str:
    """A text file's contents as a string; ``what`` names it in errors (default: its file name)."""
    path = Path(path)
    return decode_text(read_bytes(path, what), _subject(path, what))


def parse_json(text: str, subject: str, one_line: bool = False):
    """The value of a JSON document; ``subject`` names it in the one-line error a malformed one gets.

    ``one_line``: the text is one line of a larger file (JSON Lines), which ``subject`` names.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        raise FnwebError(f"{subject} is not valid JSON: {exc.msg} at {where}.") from exc


def read_json(path: str | os.PathLike, what: Optional[str] = None):
    """A JSON file's value; an empty, binary, non-UTF-8 or malformed file is a one-line error."""
    path = Path(path)
    subject = _subject(path, what)
    text = read_text(path, what)
    if not text.strip():
        raise FnwebError(f"{subject} is empty: it holds no JSON.")
    return parse_json(text, subject)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` via a temp file in the same folder and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FnwebError(f"Cannot write to {path.parent}: {exc.strerror}. Choose a writable folder.") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


# ---- plain records: dataclasses as JSON values, by their fields ---------------------


def to_plain(record) -> dict:
    """A dataclass record as JSON-ready values, field by field (tuples become lists, records dicts)."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(value)
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def from_plain(cls, data, source: str):
    """A ``cls`` record from JSON values: each field present converted to its type hint, the others defaulted.

    Keys that are not fields are ignored (a newer file read by an older fnweb). A value of
    the wrong kind is an ``FnwebError`` naming ``source`` and the field; the record's own
    checks (``__post_init__``) then run as for any other record.
    """
    if not isinstance(data, dict):
        raise FnwebError(f"{source} must be a JSON object, not {_kind(data)}.")
    hints = typing.get_type_hints(cls)
    values = {f.name: _converted(data[f.name], hints[f.name], f"{source}: {f.name}")
              for f in dataclasses.fields(cls) if f.init and f.name in data}
    try:
        return cls(**values)
    except FnwebError as exc:  # the record's own check: say which file broke it
        raise FnwebError(f"{source}: {exc}") from exc


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r:.40}"


def _converted(value, hint, where: str):
    """``value`` as the type ``hint`` names (Optional, tuple/list of one kind, record, bool, int, float, str)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return _converted(value, kinds[0], where)
    elif origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise FnwebError(f"{where} must be a list, not {_kind(value)}.")
        item = args[0] if args else Any
        return origin(_converted(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif origin is typing.Literal:
        if value in args:
            return value
        raise FnwebError(f"{where} must be one of {', '.join(map(repr, args))}, not {_kind(value)}.")
    elif dataclasses.is_dataclass(hint):
        return from_plain(hint, value, where)
    check = _SCALARS.get(hint)
    if check is None:
        return value  # Any, or a kind with no JSON form to check
    if not check[0](value):
        raise FnwebError(f"{where} must be {check[1]}, not {_kind(value)}.")
    return hint(value)


# A JSON value accepted as each scalar kind, and how an error names the kind (bools are not numbers).
_SCALARS = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool)
          or isinstance(v, float) and v.is_integer(), "a whole number"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


# ---- probing outputs before the work ------------------------------------------------


def _probe(folder: Path, label: str) -> None:
    """Write and remove a probe file where ``folder`` is (or would be created); ``label`` names the output."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FnwebError(f"Cannot write {label}: {existing} is a file, not a folder. Choose another output path.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".fnweb-probe-", dir=existing)
    except OSError as exc:
        raise FnwebError(f"Cannot write {label}: {exc.strerror or exc} in {existing}. "
                         "Choose a writable folder.") from exc
    os.close(handle)
    os.unlink(probe)


def check_writable_folder(folder: str | os.PathLike, what: str = "the output folder") -> None:
    """Refuse a folder that cannot be created or written, by writing and removing a probe file.

    A folder that does not exist yet is probed in its nearest existing parent (where it
    would be created), so nothing is created here.
    """
    folder = Path(folder).expanduser()
    _probe(folder, f"{what} {folder}")


def check_writable_file(path: str | os.PathLike, what: str = "the output file") -> None:
    """Refuse a file path that is a folder or whose folder cannot be written (nothing is created)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise FnwebError(f"Cannot write {what} {path}: it is a folder. Give a file name (e.g. {path / 'out.json'}).")
    _probe(path.parent, f"{what} {path}")
