"""Exporting a recording: one row per change, as CSV (standard library) or Parquet (pyarrow, the
``parquet`` extra). Columns: seq, time_ns, symbol, each field of the schema, changed.

The output is written under a temporary name beside it and renamed into place once whole, so a
damaged recording (which stops the export, naming where) leaves no output, and an output that
existed stays as it was. Events (gaps, publishers gone, ...) are not rows; the result counts
them.
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import stat
import sys
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

from .._errors import InvalidInput, PricefeedError
from .._protocol import layout as L
from .._values import Quote, format_fields, quote_type
from . import format as F

__all__ = ["ExportResult", "to_csv", "to_parquet", "ROWS_PER_GROUP"]

#: Rows per Parquet row group (and per batch held in memory while writing).
ROWS_PER_GROUP = 65536


class ExportResult(NamedTuple):
    """Rows written (one per change), the recording's other entries by kind, and the bytes of
    torn tail left out."""

    rows: int
    events: Dict[str, int]
    torn: int


def columns(fields: Any) -> List[str]:
    return ["seq", "time_ns", "symbol", *(name for name, _ in fields), "changed"]


def _changed(q: Quote) -> str:
    return ",".join(q.changed)


def _rows(rec: F.Recording, end: Optional[int], events: Dict[str, int]) -> Iterator[Quote]:
    """The recording's changes; ``events`` counts its other entries by kind."""
    qt = quote_type(rec.fields)
    for e in rec.entries(end):
        if type(e) is qt:
            yield e
        else:
            name = F.KIND_NAMES[F.kind_of(e)]
            events[name] = events.get(name, 0) + 1


def to_csv(path: str, out: str) -> ExportResult:
    """Write the changes of the recording ``path`` to ``out`` ("-": standard output) as CSV
    (RFC 4180): a header line, then one row per change; a float reads back as the same float,
    ``changed`` names the fields the change set, separated by commas."""
    with F.Recording(path) as rec:
        events: Dict[str, int] = {}
        if out == "-":
            summary = rec.scan()  # standard output cannot be taken back: check all first
            sys.stdout.flush()
            buffer = getattr(sys.stdout, "buffer", None)
            if buffer is None:  # a text-only stream stands in for standard output
                rows = _write_csv(_rows(rec, summary.end, events), rec.fields, sys.stdout)
                return ExportResult(rows, events, rec.torn)
            # The CSV's own line ends, untranslated (Windows' text mode would add a \r to each).
            stream = io.TextIOWrapper(buffer, encoding="ascii", newline="", write_through=True)
            try:
                rows = _write_csv(_rows(rec, summary.end, events), rec.fields, stream)
                stream.flush()
            finally:
                stream.detach()
            return ExportResult(rows, events, rec.torn)
        _check_output(path, out)
        written: List[int] = []

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="ascii") as f:
                written.append(_write_csv(_rows(rec, None, events), rec.fields, f))

        _atomically(out, write)
        return ExportResult(written[0], events, rec.torn)


def _write_csv(changes: Iterator[Quote], fields: Any, f: Any) -> int:
    writer = csv.writer(f)
    writer.writerow(columns(fields))
    rows = 0
    for q in changes:
        writer.writerow((q[-2], q[-3], q[0], *q[1:-3], _changed(q)))
        rows += 1
    return rows


def _load_pyarrow() -> Any:
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise PricefeedError(
            "--to-parquet needs pyarrow, which is not installed: pip install 'pricefeed[parquet]' "
            "(--to-csv needs nothing more)"
        ) from None
    return pa, pq


def to_parquet(path: str, out: str) -> ExportResult:
    """Write the changes of the recording ``path`` to the Parquet file ``out``: seq and
    time_ns as uint64, symbol as a string, each f64 field as a double and each i64 field as an
    int64, changed as a list of field names; the schema's metadata names the feed, its
    incarnation and its fields. Needs pyarrow (the ``parquet`` extra)."""
    pa, pq = _load_pyarrow()
    with F.Recording(path) as rec:
        _check_output(path, out)
        fields = rec.fields
        h = rec.header
        types = [pa.float64() if kind == L.TYPE_F64 else pa.int64() for _, kind in fields]
        schema = pa.schema(
            [
                ("seq", pa.uint64()),
                ("time_ns", pa.uint64()),
                ("symbol", pa.string()),
                *((name, t) for (name, _), t in zip(fields, types)),
                ("changed", pa.list_(pa.string())),
            ],
            metadata={
                "pricefeed.feed": h.feed,
                "pricefeed.incarnation": str(h.incarnation),
                "pricefeed.fields": format_fields(fields),
                "pricefeed.format_version": str(h.version),
            },
        )
        events: Dict[str, int] = {}
        rows: List[int] = [0]

        def write(tmp: str) -> None:
            with pq.ParquetWriter(tmp, schema) as writer:
                for chunk in _chunks(_rows(rec, None, events), ROWS_PER_GROUP):
                    cols: List[Any] = [[q[-2] for q in chunk], [q[-3] for q in chunk], [q[0] for q in chunk]]
                    cols += [[q[1 + k] for q in chunk] for k in range(len(fields))]
                    cols.append([list(q.changed) for q in chunk])
                    writer.write_table(pa.Table.from_arrays(cols, schema=schema))
                    rows[0] += len(chunk)

        _atomically(out, write)
        return ExportResult(rows[0], events, rec.torn)


def _chunks(changes: Iterator[Quote], size: int) -> Iterator[List[Quote]]:
    chunk: List[Quote] = []
    for q in changes:
        chunk.append(q)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_output(path: str, out: str) -> None:
    """The output must not be the recording itself, and its directory must exist."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InvalidInput(f"output {out!r}: its directory {folder!r} does not exist")
    if os.path.isdir(out):
        raise InvalidInput(f"output {out!r} is a directory")
    try:
        same = os.path.samefile(path, out)
    except OSError:
        same = False
    if same:
        raise InvalidInput(f"output {out!r} is the recording itself")


def _atomically(out: str, write: Callable[[str], None]) -> None:
    """``write(tmp)``, then rename tmp to ``out``; on any failure, remove tmp, leave ``out``.
    An ``out`` that exists and is no regular file (/dev/null, a FIFO) is written as it is."""
    try:
        special = not stat.S_ISREG(os.stat(out).st_mode)
    except FileNotFoundError:
        special = False
    except OSError as exc:
        raise PricefeedError(f"output {out!r} cannot be written: {exc.strerror or exc}") from None
    if special:
        try:
            write(out)
        except OSError as exc:
            raise PricefeedError(f"output {out!r} cannot be written: {exc.strerror or exc}") from None
        return
    full = os.path.abspath(out)
    tmp = os.path.join(os.path.dirname(full), f".{os.path.basename(full)}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, full)
    except OSError as exc:
        raise PricefeedError(f"output {out!r} cannot be written: {exc.strerror or exc}") from None
    finally:
        if os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
