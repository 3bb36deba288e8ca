"""Streaming readers of usage files: one record dict per line, constant memory, any file size.

A line that cannot be read becomes a record the ingestion rejects (with its line number),
never an exception that stops the import.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import itertools
import json
import lzma
import zlib
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Iterator, TextIO
from zoneinfo import ZoneInfo

from django.utils.dateparse import parse_datetime

from tarifa.core.text import LONE_SURROGATE, SURROGATE_ESCAPE, has_lone_surrogate

# Asterisk cdr_csv (Master.csv) column order.
ASTERISK_COLUMNS = [
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata", "start",
    "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield",
]
JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
              type(None): "null"}
CSV_FIELDS = ("id", "customer", "kind", "quantity", "occurred_at", "destination")


class Undecodable:
    """The bytes of a file that its encoding could not decode, each replaced by U+FFFD (the
    `tarifa-count-replace` error handler): an import goes on, and says how many it replaced, so
    a file in another encoding than the one named is noticed instead of kept garbled. One count
    per process, reset by each import (an import reads its file in one thread)."""

    count = 0

    @classmethod
    def reset(cls) -> None:
        cls.count = 0

    @classmethod
    def replace(cls, error: UnicodeDecodeError) -> tuple[str, int]:
        cls.count += error.end - error.start
        return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("tarifa-count-replace", Undecodable.replace)


def check_encoding(name: str) -> str:
    """The codec's canonical name; ValueError for one Python does not know or that does not decode text."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding '{name}' (e.g. utf-8, latin-1, cp1252)") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"'{name}' is not a text encoding")
    return info.name


# Compressed files, known by their first bytes (logrotate compresses a rotated Master.csv with
# gzip by default, or with bzip2 or xz), and what reading a damaged one raises part way through.
DECOMPRESSORS = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))
DAMAGED_COMPRESSION = (EOFError, gzip.BadGzipFile, zlib.error, OSError, lzma.LZMAError)
ZIP_MAGIC = b"PK\x03\x04"


def is_compressed(stream: TextIO) -> bool:
    """Whether open_usage_file uncompresses this stream (its OSErrors may then be damage)."""
    return isinstance(getattr(stream, "buffer", None), (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile))


def open_usage_file(path: Path, *, encoding: str) -> TextIO:
    """A usage file as text (for the readers here), uncompressed on the fly when it is gzip, bzip2
    or xz (a rotated Master.csv.1.gz), whatever its name; ValueError for a zip archive, which
    holds files rather than one (a spreadsheet such as .xlsx is one). A UTF-8 file may start
    with a byte-order mark (Excel writes one): it is read past, or it would stick to the first
    header name or value. Undecodable bytes become U+FFFD and are counted (Undecodable)."""
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    with path.open("rb") as probe:
        start = probe.read(8)
    if start.startswith(ZIP_MAGIC):
        raise ValueError("the file is a zip archive (a spreadsheet such as .xlsx is one): extract the usage file "
                         "from it, or save the sheet as CSV")
    opener = next((opener for magic, opener in DECOMPRESSORS if start.startswith(magic)), None)
    if opener is not None:
        return opener(path, "rt", newline="", encoding=codec, errors="tarifa-count-replace")
    return path.open(newline="", encoding=codec, errors="tarifa-count-replace")


class Skipped(dict):
    """A line that is valid but not billable (e.g. an unanswered call)."""


class Unreadable(dict):
    """A line that cannot be read, as the record the ingestion reports (`_error` says why)."""


def _bad(line_no: int, message: str) -> dict:
    return Unreadable(id=f"line-{line_no}", _error=message)


# A usage record takes a few hundred characters (its attributes at most 4 KB): a longer line is a
# file of another kind (a JSON array on one line, a spreadsheet or archive named .csv).
MAX_LINE_CHARS = 1 << 20
OVERLONG = "\x00overlong line\x00"  # what _bounded_lines puts in place of such a line
OVERLONG_MESSAGE = f"the line is longer than {MAX_LINE_CHARS:,} characters (one record a line is expected)"


def _bounded_lines(stream: TextIO, *, overlong_as: str) -> Iterator[str]:
    """The stream's lines, none read in more than MAX_LINE_CHARS at a time: a longer one is read
    to its end in pieces, dropped and replaced by `overlong_as`. A whole file on one line had
    been read into memory."""
    while line := stream.readline(MAX_LINE_CHARS):
        if len(line) < MAX_LINE_CHARS or line.endswith(("\n", "\r")):
            yield line
            continue
        while (rest := stream.readline(MAX_LINE_CHARS)) and not rest.endswith(("\n", "\r")):
            pass
        yield overlong_as


def _csv_lines(stream: TextIO) -> Iterator[str]:
    """_bounded_lines for csv: an overlong line becomes a row of OVERLONG (quoted, as one field)."""
    return _bounded_lines(stream, overlong_as=f'"{OVERLONG}"\n')


def _read_csv_rows(reader) -> Iterator[list | dict]:
    """The rows of a csv reader (or DictReader) over _csv_lines, and an error record for a line it
    cannot read (a field beyond csv's size limit, which a stray quote also makes of the lines
    after it; an overlong line): reported with its line number, and the reading goes on from the
    next line. It had ended the import."""
    # A DictReader updates its own line_num only for rows it returns: its reader's counts.
    lines = getattr(reader, "reader", reader)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield _bad(lines.line_num, f"unreadable CSV: {error}")
            continue
        if OVERLONG in (row.values() if isinstance(row, dict) else row):
            yield _bad(lines.line_num, OVERLONG_MESSAGE)
            continue
        yield row


def asterisk_cdrs(stream: TextIO) -> Iterator[tuple | dict]:
    """Answered calls of an Asterisk Master.csv as (line, uniqueid, accountcode, billsec, start as
    local "YYYY-MM-DD HH:MM:SS", dst, (src, dcontext, channel, duration, userfield)); Skipped for
    the others and an error record for lines that cannot be read. Values are stripped (the five
    kept as attributes are not), not yet validated."""
    reader = csv.reader(_csv_lines(stream))
    for row in _read_csv_rows(reader):
        if isinstance(row, Unreadable):
            yield row
            continue
        line_no = reader.line_num
        if not row:
            continue
        if len(row) < len(ASTERISK_COLUMNS) - 1:  # userfield may be absent
            yield _bad(line_no, f"expected {len(ASTERISK_COLUMNS)} columns, found {len(row)}")
            continue
        if row[14].strip().upper() != "ANSWERED":
            yield Skipped(id=row[16], disposition=row[14])
            continue
        start = row[9].strip()
        if not _is_local_time(start):
            yield _bad(line_no, f"start '{row[9]}' is not YYYY-MM-DD HH:MM:SS")
            continue
        yield (line_no, row[16].strip(), row[0].strip(), row[13].strip(), start, row[2].strip(),
               (row[1], row[3], row[5], row[12], row[17] if len(row) > 17 else ""))


def asterisk_attributes(kept: tuple[str, str, str, str, str]) -> dict[str, str]:
    """The attributes a CDR keeps: src, dcontext, channel, duration and, when set, userfield."""
    src, dcontext, channel, duration, userfield = kept
    attributes = {"src": src, "dcontext": dcontext, "channel": channel, "duration": duration}
    if userfield:
        attributes["userfield"] = userfield
    return attributes


def read_asterisk_csv(stream: TextIO, *, tz: ZoneInfo, kind: str = "call") -> Iterator[dict]:
    for cdr in asterisk_cdrs(stream):
        if isinstance(cdr, dict):  # skipped or unreadable
            yield cdr
            continue
        _line, uniqueid, account, billsec, start, dst, kept = cdr
        yield {"id": uniqueid, "customer": account, "kind": kind, "quantity": billsec,
               "occurred_at": _local_time(start, tz), "destination": dst, "attributes": asterisk_attributes(kept)}


def _is_local_time(text: str) -> bool:
    if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[10] != " " or text[13] != ":" or text[16] != ":":
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _local_time(text: str, tz: ZoneInfo) -> datetime:
    """Parse Asterisk's "YYYY-MM-DD HH:MM:SS" (local time); slicing is ~5x faster than strptime."""
    text = text.strip()
    if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[10] != " " or text[13] != ":" or text[16] != ":":
        raise ValueError(text)
    local = datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                     int(text[17:19]), tzinfo=tz)
    return resolve_local(local)


def resolve_local(local: datetime) -> datetime:
    """A wall-clock time that a DST change repeats takes the offset after the change; one that it
    skips, the offset before it — PostgreSQL's rule for `timestamp AT TIME ZONE`, so both
    databases place such a CDR at the same instant."""
    later = local.replace(fold=1)
    if local.utcoffset() == later.utcoffset():
        return local
    round_trip = local.astimezone(dt_timezone.utc).astimezone(local.tzinfo)
    repeated = round_trip.replace(tzinfo=None, fold=0) == local.replace(tzinfo=None, fold=0)
    return later if repeated else local


def in_local_zone(records: Iterator[dict], *, tz: ZoneInfo) -> Iterator[dict]:
    """Records whose `occurred_at` is written without a UTC offset, placed in `tz` (by
    resolve_local's rule at a DST change); times with an offset keep theirs (passed on parsed, so
    the record's check does not parse them again), and text that is no time (which that check
    rejects) passes as it is. ERPs and spreadsheets often export local times."""
    for record in records:
        if isinstance(record, dict) and not isinstance(record, (Skipped, Unreadable)):
            text = record.get("occurred_at")
            try:
                written = parse_datetime(text) if isinstance(text, str) else None
            except ValueError:  # 2025-02-30: left to the record's check, which rejects it
                written = None
            if written is not None:
                local = written.tzinfo is None
                record = {**record, "occurred_at": resolve_local(written.replace(tzinfo=tz)) if local else written}
        yield record


# Spreadsheets in locales whose decimal separator is the comma (pt-BR among them) write CSV
# with semicolons; some tools write tabs.
CSV_DELIMITERS = (",", ";", "\t")


def read_csv(stream: TextIO) -> Iterator[dict]:
    """Records of a CSV file with a header naming CSV_FIELDS (others become attributes); the
    delimiter is the one of CSV_DELIMITERS that splits the header into the required names."""
    header = stream.readline(MAX_LINE_CHARS)
    if len(header) == MAX_LINE_CHARS:
        raise ValueError(f"the CSV header is longer than {MAX_LINE_CHARS:,} characters: not a usage file?")
    required = CSV_FIELDS[:5]
    found = {}
    for delimiter in CSV_DELIMITERS:
        names = next(csv.reader([header], delimiter=delimiter), [])
        found[delimiter] = [f for f in required if f not in names]
        if not found[delimiter]:
            break
    else:
        raise ValueError(f"the CSV header lacks {', '.join(found[','])}")
    reader = csv.DictReader(itertools.chain([header], _csv_lines(stream)), delimiter=delimiter)
    for row in _read_csv_rows(reader):
        if isinstance(row, Unreadable):
            yield row
            continue
        record = {k: row.get(k) for k in CSV_FIELDS if row.get(k) not in (None, "")}
        extra = {k: v for k, v in row.items() if k not in CSV_FIELDS and k is not None and v not in (None, "")}
        if extra:
            record["attributes"] = extra
        yield record


def read_jsonl(stream: TextIO) -> Iterator[dict]:
    for line_no, line in enumerate(_bounded_lines(stream, overlong_as=OVERLONG), start=1):
        if line is OVERLONG:
            yield _bad(line_no, OVERLONG_MESSAGE)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _bad(line_no, f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(record, dict):
            yield _bad(line_no, f"expected a JSON object, found {JSON_TYPES.get(type(record), 'a value')}")
            continue
        if SURROGATE_ESCAPE.search(line) and has_lone_surrogate(record):  # PostgreSQL cannot store it
            yield _bad(line_no, f"the line {LONE_SURROGATE}")
            continue
        yield record
