"""CSV and XLSX: one record per row (``header = value | …``), each a section of its own labelled
``row 3`` (``Sheet1 row 3``), so the chunker makes every row a chunk that is retrievable alone."""
from __future__ import annotations

import csv
import io
from dataclasses import replace

from bastion.core.errors import ParseError
from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build, record
from bastion.parsing.text import decode


def _records(header: list[str], rows: list[list[str]], sheet: str | None) -> list[tuple[str, int | None, str | None]]:
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
    parts: list[tuple[str, int | None, str | None]] = []
    for n, row in enumerate(rows, start=1):
        fields = [(h, str(v).strip()) for h, v in zip(header, row) if v is not None and str(v).strip()]
        if fields:
            label = f"{sheet} row {n}" if sheet else f"row {n}"
            parts.append((record(fields), None, label))
    return parts


def parse_csv(content: bytes) -> ParsedDocument:
    text = decode(content)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = [r for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ParseError("CSV needs a header row and at least one data row")
    return replace(build(_records(rows[0], rows[1:], None), "csv"), columns={"": [h.strip() for h in rows[0]]})


def parse_xlsx(content: bytes) -> ParsedDocument:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    parts, columns = [], {}
    for sheet in book.worksheets:
        rows = [list(r) for r in sheet.iter_rows(values_only=True) if any(v is not None for v in r)]
        if len(rows) >= 2:
            header = [str(h or "").strip() for h in rows[0]]
            parts.extend(_records(header, rows[1:], sheet.title))
            columns[sheet.title] = header
    book.close()
    return replace(build(parts, "openpyxl"), columns=columns or None)
