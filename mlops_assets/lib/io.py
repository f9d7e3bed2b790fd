"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@contextmanager
def atomic_path(target: Path | str):
    """Yield a temporary path beside ``target``; on success move it over ``target`` atomically.

    The temporary file lives in the same directory so ``os.replace`` is a rename on one file
    system. On error the temporary file is removed and ``target`` is untouched; one a killed
    process left is removed by the next write of ``target`` (``private_file``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = private_file(target.parent, target.name)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)  # the rename itself survives a power cut
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_file(folder: Path, name: str) -> tuple[int, str]:
    """A new hidden file ``folder/.<name>.<host>.<pid>.<random>.tmp`` for this process to
    write ``name`` through (``mkstemp``'s descriptor and path). A process killed outright
    (kill -9, out of memory) cannot remove its own, so those of this host's dead processes
    are removed first; a live process's, or another host's on a shared volume, are not."""
    mine = f".{name[:120]}.{_host()}."  # within a file name's 255 bytes
    for old in _left_by_dead(folder, glob.escape(mine) + "*.tmp"):
        old.unlink(missing_ok=True)
    return tempfile.mkstemp(prefix=f"{mine}{os.getpid()}.", suffix=".tmp", dir=folder)


def _host() -> str:
    """This machine's name as private files and folders carry it (``private_file``,
    ``scratch_dir``)."""
    return socket.gethostname().replace(".", "_")


def _left_by_dead(folder: Path | str, pattern: str) -> Iterator[Path]:
    """The entries of ``folder`` matching ``pattern``, named ``.<name>.<host>.<pid>.<...>``,
    whose process on this host is gone (a live process's, or another host's, are not)."""
    mark = f".{_host()}."
    for entry in Path(folder).glob(pattern):
        _, found, rest = entry.name.rpartition(mark)
        pid = rest.split(".")[0]
        if found and pid.isdigit() and not _alive(int(pid)):
            yield entry


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(target: Path | str, line: str) -> None:
    """Append one line and fsync it. A crash mid-append leaves at most a torn last line,
    which readers of an append-only file detect and skip (see ``read_json_lines``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "ab") as f:
        if f.tell() and not _ends_with_newline(target):
            f.write(b"\n")  # close a torn line left by a crash, so this line stands alone
        f.write(line.rstrip("\n").encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_json_lines(path: Path | str) -> tuple[list[Any], list[tuple[int, str]]]:
    """The JSON values of an append-only file, one per line, and the lines that are not JSON
    as ``(line number, reason)`` (a torn write): the caller decides what they mean."""
    values, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as err:
                bad.append((number, f"not JSON ({err.msg} at column {err.colno})"))
    return values, bad


def write_text(target: Path | str, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: Path | str, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(target: Path | str, df: pd.DataFrame) -> Path:
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(target)


# Rows read, typed or written at a time by the steps that work out of core.
CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class ParquetFile:
    """A table already written as a Parquet file: a step that writes its output out of core
    hands the file to the IO manager, which moves it into place (``move_into``)."""

    path: Path


def move_into(target: Path | str, src: Path | str) -> Path:
    """Move the file ``src`` to ``target`` atomically (a rename on one file system, a copy
    beside ``target`` then a rename across two)."""
    return write_with(target, lambda tmp: shutil.move(src, tmp))


def read_parquet(path: Path | str) -> pd.DataFrame:
    """A stored Parquet table; a damaged file is named in the error."""
    with naming(path):
        return pd.read_parquet(path)


@contextmanager
def naming(path: Path | str):
    """Errors reading the Parquet file ``path`` (damaged, missing) as a ValueError naming it."""
    import polars as pl
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowInvalid, OSError, pl.exceptions.PolarsError) as err:
        raise ValueError(f"{path} is not a readable Parquet file (damaged, or not written "
                         f"by this project): {err}") from err


def parquet_rows(path: Path | str) -> int:
    """The row count of a Parquet file, from its footer (no rows read)."""
    import pyarrow.parquet as pq

    with naming(path):
        return pq.ParquetFile(path).metadata.num_rows


def read_parquet_tables(path: Path | str, rows: int, columns: list[str] | None = None,
                        dictionary: Iterable[str] = ()) -> Iterator:
    """A Parquet file (``columns`` of it, or all) as Arrow tables of at most ``rows`` rows,
    each with the file's schema and metadata, the text columns named in ``dictionary``
    dictionary-encoded (a value per category, not per row: hashing or converting them then
    costs a category, not a row); one empty table (with the file's columns) if it has no
    rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with naming(path):
        names = set(pq.read_schema(path).names) if dictionary else set()
        f = pq.ParquetFile(path, read_dictionary=[c for c in dictionary if c in names])
    with f:
        schema = f.schema_arrow if columns is None else pa.schema(
            [f.schema_arrow.field(c) for c in columns], metadata=f.schema_arrow.metadata)
        empty = True
        for batch in f.iter_batches(batch_size=rows, columns=columns):
            empty = False
            yield pa.Table.from_batches([batch], schema)
        if empty:
            yield schema.empty_table()


def read_parquet_chunks(path: Path | str, rows: int, columns: list[str] | None = None,
                        categories: Iterable[str] = ()) -> Iterator[pd.DataFrame]:
    """``read_parquet_tables`` as pandas frames, typed as ``pd.read_parquet`` types the whole
    file, but for the text columns named in ``categories``, read as pandas categories (no
    Python string per row: the category features of 29M rows)."""
    for table in read_parquet_tables(path, rows, columns, categories):
        yield table.to_pandas()


def read_parquet_frames(path: Path | str, rows: int) -> Iterator:
    """A Parquet file as Polars frames of at most ``rows`` rows, in the file's order (one
    empty frame, with the file's columns, if it has none). Each frame is a slice of the file
    read when it is asked for: Polars reads only the row groups it overlaps, on every core,
    so a file larger than memory is held a frame at a time. (Polars' streamed batches run
    ahead of a reader slower than they are: validating the largest 1000x batch, 7.76M rows
    of text, peaked at 944 MB with them, 550 MB by slices, for the same 0.4 s of reading.)"""
    import polars as pl

    total = parquet_rows(path)
    with naming(path):
        scan = pl.scan_parquet(path)
        if total == 0:
            yield pl.DataFrame(schema=scan.collect_schema())
            return
        for start in range(0, total, rows):
            yield scan.slice(start, rows).collect()


def take_rows(chunks: Iterable[pd.DataFrame], positions: np.ndarray) -> pd.DataFrame:
    """The rows at ``positions`` (sorted, counted across ``chunks`` one after another)."""
    parts, start = [], 0
    for chunk in chunks:
        lo, hi = np.searchsorted(positions, [start, start + len(chunk)])
        parts.append(chunk.iloc[positions[lo:hi] - start])
        start += len(chunk)
    return pd.concat(parts, ignore_index=True)


def read_parquet_rows(paths: list[Path], positions: np.ndarray, rows: int) -> pd.DataFrame:
    """The rows at ``positions`` (sorted, counted across ``paths`` one after another), read
    ``rows`` at a time: a sample of files larger than memory."""
    return take_rows((chunk for path in paths for chunk in read_parquet_chunks(path, rows)),
                     positions)


class ParquetWriter:
    """Frames appended to one Parquet file, with the schema (and pandas types) of the first
    (a frame with no rows still writes the file, with its columns), or with ``schema``
    (Arrow tables or Polars frames cast to it).

    Statistics (min/max per page) are written for numbers and times only: nothing reads
    text statistics, and they were a quarter of the time to write validated rows. ``plain``:
    text columns of unique values (row keys), written without a dictionary, which could
    not hold them and is abandoned after it is tried.

    Polars frames are handed to the writer as they are held, text as string views (no
    copy), and the file is given the Arrow schema it would have had (text as ``string``):
    readers see the same schema and rows, written without copying every text value first
    (the largest 1000x batch's valid rows: 2.5-3.5 -> 2.0 s of CPU in the writer)."""

    def __init__(self, path: Path | str, schema=None, plain: Iterable[str] = ()):
        self.path, self._writer, self.rows, self._schema = Path(path), None, 0, schema
        self._plain = set(plain)
        self._stored = None  # the schema readers see, when the writer's is not it

    def _open(self, schema, views: bool = False) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        def ordered(field) -> bool:
            t = field.type
            return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_temporal(t))

        written = schema
        if views:
            self._stored = schema
            written = pa.schema([f.with_type(pa.string_view())
                                 if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                                 else f for f in schema])
        self._writer = pq.ParquetWriter(
            self.path, written, store_schema=not views,
            write_statistics=[f.name for f in schema if ordered(f)],
            use_dictionary=[f.name for f in schema if f.name not in self._plain])

    def write(self, frame) -> None:
        import pyarrow as pa

        if not isinstance(frame, pd.DataFrame):  # Arrow or Polars
            polars = not isinstance(frame, pa.Table)
            if polars:
                import polars as pl

                table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
            else:
                table = frame
            if self._writer is None:
                schema = table.schema if self._schema is None else self._schema
                if self._schema is None and (polars or schema.metadata is None):
                    schema = pa.schema([  # text as pandas writes it
                        f.with_type(pa.string()) if pa.types.is_large_string(f.type)
                        or pa.types.is_string_view(f.type) else f for f in schema],
                        metadata=schema.metadata)
                self._open(schema, views=polars)
            self._writer.write_table(table.cast(self._writer.schema))
            self.rows += table.num_rows
            return
        if self._writer is None:
            # An object column with no value in the first frame has Arrow type null; every
            # object column here is text, which later frames may hold.
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
            schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                                for f in schema], metadata=schema.metadata)
            self._open(schema)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._writer.schema,
                                                      preserve_index=False))
        self.rows += len(frame)

    def close(self) -> None:
        if self._writer is not None:
            if self._stored is not None:  # the Arrow schema readers restore, as pyarrow keeps it
                self._writer.add_key_value_metadata({
                    **(self._stored.metadata or {}),
                    b"ARROW:schema": base64.b64encode(self._stored.serialize().to_pybytes())})
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_with(target: Path | str, writer: Callable[[Path], None]) -> Path:
    """Atomically write ``target`` with a function that writes to the path it is given."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def copy_file(src: Path | str, target: Path | str) -> Path:
    with atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
    return Path(target)


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# A file changed this recently may change again within the same timestamp (file systems
# keep times in steps of up to 2 s): its hash is not kept.
SETTLED_SECONDS = 2.0


def file_identity(path: Path | str) -> str:
    """What changes whenever a file's content can have changed: its device and inode (a
    rename puts another file there), size, and modification and change times (the change
    time follows every write and cannot be set back)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def content_hashes(paths: dict[str, Path], kept: dict[str, list[str]]
                   ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The SHA-256 of each file of ``paths`` (by key), read only for files whose identity
    (``file_identity``) is not the one ``kept`` (key -> [identity, hash]) holds, on every
    core (hashlib lets go of the GIL: 4.9 GB in 1.7 s on two, 3.2 s on one); and what to keep
    for next time: the files that did not change while hashed nor in the
    ``SETTLED_SECONDS`` before. A file gone since it was listed is left out (its key is
    not in either), not an error: it is looked at again next time, if it is back."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    def read(key: str, identity: str) -> tuple[str | None, list[str] | None]:
        started = time.time_ns()
        try:
            sha = sha256_file(paths[key])
            now = file_identity(paths[key])
        except FileNotFoundError:
            return None, None
        *_, mtime, ctime = identity.split(":")
        settled = max(int(mtime), int(ctime)) < started - SETTLED_SECONDS * 1e9
        return sha, [identity, sha] if settled and now == identity else None

    identities = {}
    for key, path in paths.items():
        with contextlib.suppress(FileNotFoundError):
            identities[key] = file_identity(path)
    hashes: dict[str, str] = {}
    keep: dict[str, list[str]] = {}
    for key, identity in identities.items():
        if kept.get(key, [None])[0] == identity:
            hashes[key], keep[key] = kept[key][1], kept[key]
    new = [key for key in identities if key not in hashes]
    with ThreadPoolExecutor(max(1, min(len(new), os.cpu_count() or 1))) as pool:
        for key, (sha, entry) in zip(new, pool.map(read, new, [identities[k] for k in new]),
                                     strict=True):
            if sha is not None:
                hashes[key] = sha
            if entry:
                keep[key] = entry
    return {key: hashes[key] for key in paths if key in hashes}, keep


def read_json(path: Path | str) -> Any:
    with open(path) as f:
        return json.load(f)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def scratch_dir(parent: Path | str, name: str) -> Iterator[Path]:
    """A scratch directory ``parent/.<name>.<host>.<pid>.<random>``, removed when the block
    ends. A process killed outright (kill -9, out of memory) cannot remove its own, so the
    ones of this host's dead processes are removed first (a live process's, or another
    host's on a shared volume, are left alone)."""
    parent, host = Path(parent), _host()
    parent.mkdir(parents=True, exist_ok=True)
    for old in _left_by_dead(parent, f".*.{glob.escape(host)}.*.*"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.{host}.{os.getpid()}.",
                                     dir=parent) as work:
        yield Path(work)


def resident_mb() -> float:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def release_memory(above_mb: float = 1024) -> None:
    """Hand the memory a finished step freed back to the system: Arrow's pool and glibc's
    malloc keep freed pages for reuse, so in a process that runs one step after another (the
    in-process executor) each step would otherwise start from the previous one's peak. Only
    in a process holding more than ``above_mb``: the garbage collection takes about 0.25 s
    with Dagster loaded, which small data would pay at every step for nothing."""
    import ctypes
    import gc

    import pyarrow as pa

    if resident_mb() <= above_mb:
        return
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass

def sample_positions(n: int, max_rows: int, seed: int = 0) -> np.ndarray:
    """Positions of a deterministic sample of at most ``max_rows`` of ``n`` rows, in order
    (all of them when ``n <= max_rows``): what the costly parts (bootstrap CIs, Evidently
    reports, a search) run on above a configured size."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
