"""Batch scoring's files: CSV and Parquet read in chunks (never whole), outputs written as
chunks arrive and left in place only when a run completes, the rejects file's name, a file's
fingerprint for the run's lineage."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, InvalidRequest

if TYPE_CHECKING:
    import pandas as pd


def file_format(path: str | os.PathLike[str], what: str) -> str:
    """``csv`` or ``parquet``, by the file's extension."""
    lower = str(path).lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz")) or (what == "INPUT" and lower.endswith(".txt")):
        return "csv"
    raise InvalidRequest(
        f"{what} {path}: unsupported file type (use .csv or .parquet)",
        details=[{"field": what, "reason": "expected a .csv or .parquet file"}],
    )


def rejects_path(output: str | os.PathLike[str]) -> str:
    """Where the rejects of ``output`` go: its stem plus ``.rejects.csv`` / ``.rejects.parquet``."""
    text = str(output).rstrip("/")
    for ext in (".csv.gz", ".parquet", ".csv", ".pq"):
        if text.lower().endswith(ext):
            suffix = ".rejects.csv" if ext == ".csv.gz" else ".rejects" + ext
            return text[: -len(ext)] + suffix
    return text + ".rejects"


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The input's sha256 and size (read in blocks: memory does not grow with the file)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "size_bytes": size}


class Source:
    """An input file read in chunks: ``(first row number, frame)`` pairs, and how far it got."""

    def __init__(
        self,
        columns: list[str],
        chunks: Iterator[tuple[int, pd.DataFrame]],
        total: int,
        unit: str,
        position: Callable[[], int],
        close: Callable[[], None],
    ) -> None:
        self.columns = columns
        self._chunks = chunks
        self.total = total
        self.unit = unit
        self.position = position
        self._close = close

    def __iter__(self) -> Iterator[tuple[int, pd.DataFrame]]:
        return self._chunks

    def close(self) -> None:
        self._close()


def open_source(path: str, chunk_rows: int) -> Source:
    """A CSV (every cell as text) or Parquet file (typed, Arrow-backed columns), in chunks."""
    if file_format(path, "INPUT") == "parquet":
        return _parquet_source(path, chunk_rows)
    import pandas as pd

    compression = "gzip" if path.lower().endswith(".gz") else None
    fh = open(path, "rb")  # noqa: SIM115 - closed by the Source
    try:
        header = pd.read_csv(fh, nrows=0, compression=compression)
    except (ValueError, UnicodeDecodeError) as exc:
        fh.close()
        raise InvalidInput(
            f"INPUT {path}: cannot read a CSV header: {exc}",
            details=[{"field": "INPUT", "reason": "not a CSV file with a header"}],
        ) from exc
    fh.seek(0)
    reader = pd.read_csv(
        fh,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        chunksize=chunk_rows,
        compression=compression,
    )

    def chunks() -> Iterator[tuple[int, pd.DataFrame]]:
        first = 0
        for chunk in reader:
            yield first, chunk.reset_index(drop=True)
            first += len(chunk)

    def close() -> None:
        reader.close()
        fh.close()

    size = os.path.getsize(path)
    return Source([str(c) for c in header.columns], chunks(), size, "B", lambda: fh.tell(), close)


def _parquet_source(path: str, chunk_rows: int) -> Source:
    pq = _pyarrow_parquet("INPUT")
    import pandas as pd
    import pyarrow as pa

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidInput(
            f"INPUT {path}: not a Parquet file: {exc}",
            details=[{"field": "INPUT", "reason": "not a Parquet file"}],
        ) from exc
    done = [0]

    def chunks() -> Iterator[tuple[int, pd.DataFrame]]:
        for batch in pf.iter_batches(batch_size=chunk_rows):
            frame = pa.Table.from_batches([batch]).to_pandas(types_mapper=pd.ArrowDtype)
            done[0] += batch.num_rows  # read: the position counts it before it is scored
            yield done[0] - batch.num_rows, frame

    return Source(
        list(pf.schema_arrow.names),
        chunks(),
        pf.metadata.num_rows,
        "rows",
        lambda: done[0],
        pf.close,
    )


def _pyarrow_parquet(what: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequest(
            f"{what}: Parquet files need pyarrow (part of the core install): pip install pyarrow",
            details=[{"field": what, "reason": "pyarrow is not installed"}],
        ) from None
    return pq


class FileOutput:
    """An output file written chunk by chunk to ``PATH.partial``, renamed into place at the end."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self.partial = f"{path}.partial"
        self._writer: Any = None
        self._fh: Any = None
        self._schema: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        if self.fmt == "csv":
            if self._fh is None:
                compression = "gzip" if self.path.lower().endswith(".gz") else None
                self._fh = open(self.partial, "wb")  # noqa: SIM115 - closed in close()
                self._compression = compression
                header = True
            else:
                header = False
            frame.to_csv(self._fh, header=header, index=False, compression=self._compression)
            return
        import pyarrow as pa

        if self._writer is None:
            pq = _pyarrow_parquet("OUTPUT")
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self._schema = table.schema.remove_metadata()
            self._writer = pq.ParquetWriter(self.partial, self._schema)
        else:
            table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        self._writer.write_table(table.replace_schema_metadata(None))

    def close(self, empty: pd.DataFrame) -> None:
        """Finish the file (``empty`` gives its columns when no row was written) and rename it."""
        if self._fh is None and self._writer is None:
            if self.fmt == "csv":
                empty.to_csv(self.partial, index=False)
            else:
                empty.to_parquet(self.partial, index=False)
        if self._fh is not None:
            self._fh.close()
        if self._writer is not None:
            self._writer.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._fh is not None:
                self._fh.close()
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.partial)
