"""Streaming readers: input files -> blocks of parsed rows, with rejects kept beside them.

A *parser* (see ``amazon.py``, ``recbole.py``, ``tabular.py``) turns a block of raw lines into
``(good rows, rejects)``. :func:`read_file_blocks` streams one file (local, ``s3://``, gzip or
plain) through a parser and yields *parsed blocks*: the good rows' columns plus two columns,
``reason`` and ``text``, that are null for good rows and set for rejects. One table per block
lets a Ray Data pipeline carry both through a single stream; the driver splits them apart.

Every row carries ``order = (file_index << 32) + line_number``: a global, deterministic order
of source lines whatever the number of workers, used to keep the first duplicate and to
report rejects by file and line.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recexp.data import schema
from recexp.errors import DataError
from recexp.store import open_fs

LineParser = Callable[..., tuple[pa.Table, pa.Table]]
"""``parser(lines, line_nos, source, header, cfg, order_base) -> (good, rejects)``."""

ArrowParser = Callable[..., tuple[pa.Table, pa.Table]]
"""``parser(table, source, cfg, order_base, first_row) -> (good, rejects)`` for Parquet input."""

_READ_CHUNK = 8 << 20
FILE_SHIFT = 32
"""``order >> FILE_SHIFT`` is the file index, ``order & (2**32 - 1)`` the line (or row) number."""


@dataclass(frozen=True)
class FileSpec:
    """One input file as a Ray Data row."""

    index: int
    uri: str


def list_files(path: str, patterns: Sequence[str], endpoint_url: str | None = None) -> list[str]:
    """URIs of the files under ``path`` matching any of the glob ``patterns``, sorted.

    ``path`` may also be a single file. Fails with one clear line when nothing matches.
    """
    fs, base = open_fs(path, endpoint_url)
    if not fs.exists(base):
        raise DataError(f"input path not found: {path}")
    prefix = path.split("://")[0] + "://" if "://" in path else ""
    if fs.isfile(base):
        return [prefix + base]
    names = sorted(p for p in fs.find(base) if any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat) for pat in patterns))
    if not names:
        raise DataError(f"no files matching {list(patterns)} under {path}")
    return [prefix + n for n in names]


def iter_lines(uri: str, endpoint_url: str | None = None, chunk: int = _READ_CHUNK) -> Iterator[bytes]:
    """Lines of a (possibly gzip-compressed) file, without newlines, read in bounded chunks."""
    fs, path = open_fs(uri, endpoint_url)
    with fs.open(path, "rb", compression="infer") as f:
        carry = b""
        while data := f.read(chunk):
            parts = (carry + data).split(b"\n")
            carry = parts.pop()
            yield from parts
        if carry:
            yield carry


def read_file_blocks(
    spec: FileSpec, parser: LineParser, cfg: object, lines_per_block: int, has_header: bool, endpoint_url: str | None
) -> Iterator[pa.Table]:
    """Stream ``spec`` through ``parser`` in blocks of at most ``lines_per_block`` lines."""
    order_base = spec.index << FILE_SHIFT
    header: bytes | None = None
    lines: list[bytes] = []
    line_nos: list[int] = []
    for number, line in enumerate(iter_lines(spec.uri, endpoint_url), start=1):
        if has_header and header is None:
            header = line.rstrip(b"\r")
            continue
        lines.append(line)
        line_nos.append(number)
        if len(lines) >= lines_per_block:
            yield combine(*parser(lines, line_nos, spec.uri, header, cfg, order_base), order_base)
            lines, line_nos = [], []
    if has_header and header is None:
        raise DataError(f"{spec.uri}: empty file (a header line was expected)")
    if lines:
        yield combine(*parser(lines, line_nos, spec.uri, header, cfg, order_base), order_base)


def read_parquet_blocks(spec: FileSpec, parser: ArrowParser, cfg: object, rows_per_block: int, endpoint_url: str | None) -> Iterator[pa.Table]:
    """Stream a Parquet file through an Arrow parser, one record batch at a time."""
    order_base = spec.index << FILE_SHIFT
    fs, path = open_fs(spec.uri, endpoint_url)
    with fs.open(path, "rb") as f:
        first_row = 1
        for batch in pq.ParquetFile(f).iter_batches(batch_size=rows_per_block):
            table = pa.Table.from_batches([batch])
            yield combine(*parser(table, spec.uri, cfg, order_base, first_row), order_base)
            first_row += table.num_rows


def combine(good: pa.Table, rejects: pa.Table, order_base: int) -> pa.Table:
    """One block holding good rows (``reason`` null) and rejects (``reason`` set)."""
    n_good, n_bad = good.num_rows, rejects.num_rows
    columns = {}
    for field in good.schema:
        if field.name == "order":
            bad_order = pc.add(rejects["line"], order_base)
            columns["order"] = pa.concat_arrays([good["order"].combine_chunks(), bad_order.combine_chunks()])
        else:
            columns[field.name] = pa.concat_arrays([good[field.name].combine_chunks(), pa.nulls(n_bad, field.type)])
    columns["reason"] = pa.concat_arrays([pa.nulls(n_good, pa.string()), rejects["reason"].combine_chunks()])
    columns["text"] = pa.concat_arrays([pa.nulls(n_good, pa.string()), rejects["text"].combine_chunks()])
    return pa.table(columns)


def split_parsed(table: pa.Table, uris: Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """Undo :func:`combine` on the driver: ``(good rows, rejects with schema.REJECTS)``."""
    is_bad = table["reason"].is_valid()
    good = table.filter(pc.invert(is_bad)).drop_columns(["reason", "text"])
    bad = table.filter(is_bad)
    order = bad["order"].to_numpy()
    rejects = pa.table(
        {
            "source": pa.array([uris[o >> FILE_SHIFT] for o in order], pa.string()),
            "line": pa.array(order & ((1 << FILE_SHIFT) - 1), pa.int64()),
            "reason": bad["reason"],
            "text": bad["text"],
        },
        schema=schema.REJECTS,
    )
    return good, rejects
