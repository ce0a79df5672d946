"""Streaming readers for CSV, XLSX and JSON Lines, with encoding and delimiter detection.

Row numbers are what a person sees: in CSV and XLSX the header is row 1 and the first
data row is row 2 (as in a spreadsheet; blank rows are skipped but keep their numbers in
XLSX); in JSON Lines the row number is the line number. Nothing is held
in memory beyond one row, whatever the file size.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from zgoda.core.db import NUL
from zgoda.core.errors import InvalidInput

SAMPLE_BYTES = 256 * 1024
MAX_FIELD_CHARS = 1_000_000
DELIMITERS = (",", ";", "\t")
ENCODINGS = ("utf-8", "utf-8-sig", "cp1250", "iso-8859-2")
BAD_BYTE = "\ufffd"

# Bytes that are Polish letters in Windows-1250 but C1 control characters in ISO-8859-2:
# their presence decides for Windows-1250 (ś ź Ś Ź Ť ť and typographic quotes).
_CP1250_ONLY = set(range(0x80, 0xA0))
# Bytes that are Polish letters in ISO-8859-2 but other signs in Windows-1250 (ą Ą ś ź Ś Ź).
_ISO_POLISH = {0xB1, 0xA1, 0xB6, 0xBC, 0xA6, 0xAC}
_CP1250_POLISH = {0xB9, 0xA5, 0x9C, 0x9F, 0x8C, 0x8F}


def _mark_bad_bytes(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return BAD_BYTE, error.end


codecs.register_error("zgoda_mark", _mark_bad_bytes)


def detect_encoding(sample: bytes) -> str:
    """UTF-8 (with or without BOM) when the bytes decode as such, else Windows-1250 or ISO-8859-2."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as error:
        if error.start >= len(sample) - 3:  # a character cut by the sample's end
            return "utf-8"
        utf8_like = sum(1 for b in sample if b >= 0xC2) and _looks_mostly_utf8(sample)
        if utf8_like:
            return "utf-8"
    high = [b for b in sample if b >= 0x80]
    if any(b in _CP1250_ONLY for b in high):
        return "cp1250"
    iso_score = sum(1 for b in high if b in _ISO_POLISH)
    cp_score = sum(1 for b in high if b in _CP1250_POLISH)
    return "iso-8859-2" if iso_score > cp_score else "cp1250"


def _looks_mostly_utf8(sample: bytes) -> bool:
    """True when most non-ASCII bytes form valid UTF-8 sequences (a UTF-8 file with a few stray bytes)."""
    text = sample.decode("utf-8", errors="zgoda_mark")
    bad = text.count(BAD_BYTE)
    good = sum(1 for ch in text if ord(ch) >= 0x80 and ch != BAD_BYTE)
    return good > bad * 3


def detect_delimiter(text: str) -> str:
    """The delimiter among , ; and tab that splits the header and the first rows most consistently."""
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in DELIMITERS}
        return max(counts, key=lambda d: counts[d]) if max(counts.values()) > 0 else ","


@dataclass
class FileInfo:
    format: str  # csv, xlsx, jsonl
    encoding: str | None = None
    delimiter: str | None = None
    headers: list[str] = field(default_factory=list)


def detect_format(path: Path, declared: str | None = None) -> str:
    if declared:
        if declared not in ("csv", "xlsx", "jsonl"):
            raise InvalidInput(f"Unknown file format '{declared}'; use csv, xlsx or jsonl.", field="format")
        return declared
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    return "csv"


def _check_headers(headers: list[str]) -> list[str]:
    cleaned = [h.strip() for h in headers]
    if not any(cleaned):
        raise InvalidInput("The file has no header row.", field="file")
    seen: dict[str, int] = {}
    for index, header in enumerate(cleaned, start=1):
        if not header:
            raise InvalidInput(f"Column {index} has no header.", field="header")
        if NUL in header:
            raise InvalidInput(f"The header of column {index} holds a NUL character.", field="header")
        key = header.lower()
        if key in seen:
            raise InvalidInput(
                f"The header '{header}' appears twice (columns {seen[key]} and {index}).", field="header"
            )
        seen[key] = index
    return cleaned


def inspect(
    path: Path, *, declared_format: str | None = None, encoding: str | None = None, delimiter: str | None = None
) -> FileInfo:
    """Detect format, encoding, delimiter and headers without reading the whole file."""
    fmt = detect_format(path, declared_format)
    if path.stat().st_size == 0:
        raise InvalidInput("The file is empty.", field="file")
    info = FileInfo(format=fmt)
    if fmt == "csv":
        with path.open("rb") as handle:
            sample = handle.read(SAMPLE_BYTES)
        if encoding is not None and encoding not in ENCODINGS:
            raise InvalidInput(
                f"Unsupported encoding '{encoding}'; use one of {', '.join(ENCODINGS)}.", field="encoding"
            )
        info.encoding = encoding or detect_encoding(sample)
        text = sample.decode(info.encoding, errors="zgoda_mark")
        if delimiter is not None and delimiter not in DELIMITERS:
            raise InvalidInput("The delimiter must be ',', ';' or a tab.", field="delimiter")
        info.delimiter = delimiter or detect_delimiter(text)
    first = next(_rows(path, info, with_header=True), None)
    if first is None:
        raise InvalidInput("The file is empty.", field="file")
    info.headers = _check_headers([str(v) for v in first[1]])
    return info


def read_rows(path: Path, info: FileInfo) -> Iterator[tuple[int, dict[str, str], str | None]]:
    """Data rows as ``(row_number, {header: text}, problem)``; ``problem`` names a row that cannot be read."""
    headers = info.headers
    for number, cells in _rows(path, info, with_header=False):
        if isinstance(cells, str):  # a row-level problem reported by the reader
            yield number, {}, cells
            continue
        values = ["" if v is None else str(v) for v in cells]
        problem = None
        if any(BAD_BYTE in v for v in values):
            problem = f"the row has bytes that are not valid {info.encoding}; the file mixes encodings"
        elif any(NUL in v for v in values):  # PostgreSQL's text refuses it
            column = next(index for index, value in enumerate(values) if NUL in value)
            where = f"'{headers[column]}'" if column < len(headers) else f"column {column + 1}"
            problem = f"the cell under {where} holds a NUL character"
        elif len(values) > len(headers) and any(v.strip() for v in values[len(headers) :]):
            problem = f"the row has {len(values)} cells but the header has {len(headers)}"
        yield number, dict(zip(headers, values + [""] * (len(headers) - len(values)), strict=False)), problem


def _rows(path: Path, info: FileInfo, *, with_header: bool) -> Iterator[tuple[int, Any]]:
    if info.format == "csv":
        yield from _csv_rows(path, info, with_header)
    elif info.format == "xlsx":
        yield from _xlsx_rows(path, with_header)
    else:
        yield from _jsonl_rows(path, info, with_header)


def _csv_rows(path: Path, info: FileInfo, with_header: bool) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    with path.open("rb") as raw:
        text: IO[str] = io.TextIOWrapper(raw, encoding=info.encoding or "utf-8", errors="zgoda_mark", newline="")
        reader = csv.reader(text, delimiter=info.delimiter or ",")
        number = 0
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank lines carry nothing
                number += 1
                if number == 1:
                    if with_header:
                        yield 0, cells
                        return
                    continue
                yield number, cells
        except csv.Error as error:
            raise InvalidInput(
                f"Row {number + 1} cannot be read as CSV: {error}. Nothing was imported.", field="file"
            ) from error


def _xlsx_rows(path: Path, with_header: bool) -> Iterator[tuple[int, Any]]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:
        raise InvalidInput(f"The file is not a readable XLSX workbook: {error}", field="file") from error
    try:
        sheet = workbook.worksheets[0]
        header_seen = False
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            cells = [_xlsx_text(v) for v in row]
            if not any(c.strip() for c in cells):
                continue
            if not header_seen:
                header_seen = True
                if with_header:
                    yield 0, cells
                    return
                continue
            yield number, cells
    finally:
        workbook.close()


def _xlsx_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _jsonl_rows(path: Path, info: FileInfo, with_header: bool) -> Iterator[tuple[int, Any]]:
    """JSON Lines: the header is the union of the first object's keys; later keys outside it are rejected."""
    with path.open("rb") as handle:
        number = 0
        for raw in handle:
            line = raw.strip()
            if not line:
                continue
            number += 1
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                if with_header:
                    raise InvalidInput(f"Line {number} is not valid JSON: {error}", field="file") from error
                yield number, f"not valid JSON: {error}"
                continue
            if not isinstance(record, dict):
                if with_header:
                    raise InvalidInput(f"Line {number} is not a JSON object.", field="file")
                yield number, "not a JSON object"
                continue
            if with_header:
                yield 0, list(record.keys())
                return
            unknown = [key for key in record if key not in info.headers]
            if unknown:
                yield number, f"unknown keys {', '.join(unknown)} (the first line defines the columns)"
                continue
            yield number, [_json_text(record.get(header)) for header in info.headers]


def _json_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
