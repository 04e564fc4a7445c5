"""Write rows as parquet shards in a given `datasets.Features` schema, a bounded batch at a time.

The files carry the `huggingface` schema metadata, so `datasets.load_dataset("parquet", ...)`
and the hub-layout loader decode the `Image` column exactly as for the real dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from datasets import Features


class ShardWriter:
    """Buffer rows and flush every `shard_rows` rows to `<out_dir>/<prefix>-NNNNN.parquet`."""

    def __init__(
        self, out_dir: Path, features: Features, shard_rows: int = 500, prefix: str = "part"
    ) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.out_dir = Path(out_dir)
        self.schema = features.arrow_schema
        self.shard_rows = shard_rows
        self.prefix = prefix
        self.rows_written = 0
        self.files: list[Path] = []
        self._buffer: list[Mapping[str, Any]] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, row: Mapping[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.shard_rows:
            self.flush()

    def write_all(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        path = self.out_dir / f"{self.prefix}-{len(self.files):05d}.parquet"
        pq.write_table(table, path)
        self.files.append(path)
        self.rows_written += len(self._buffer)
        self._buffer = []

    def close(self) -> list[Path]:
        self.flush()
        return self.files

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
