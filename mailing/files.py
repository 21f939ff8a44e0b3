"""Files only this user may read: the instance folder, the SQLite database, the secret key and
uploaded CSVs (personal data). Each is created private from its first byte (never created
readable and chmod-ed afterwards, which leaves a window), and an older install's files are
narrowed when found. No Flask here: config.py uses it before the app exists."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import IO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _narrow(path: Path, mode: int) -> None:
    """Drop group and other bits from a file or folder this process owns."""
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            path.chmod(stat.S_IMODE(st.st_mode) & mode)
    except OSError:
        pass  # not ours or gone: nothing we may change


def private_dir(path: Path) -> Path:
    """Create the folder 0700 (parents too), or narrow it if it exists."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _narrow(path, PRIVATE_DIR)
    return path


def create_private(path: Path) -> int:
    """A new file opened for writing, 0600 from the start; FileExistsError if it exists."""
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)


def save_private(stream: IO[bytes], folder: Path, suffix: str = ".csv") -> tuple[Path, int]:
    """Copy an upload into a new private file with a random name; (path, size)."""
    private_dir(folder)
    path = folder / f"{uuid.uuid4().hex}{suffix}"
    fd = create_private(path)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
            size = out.tell()
    except BaseException:
        discard(path)
        raise
    return path, size


def discard(path: str | Path | None) -> None:
    """Delete an upload once its import has ended; already gone is fine."""
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def write_once(path: Path, data: str) -> str:
    """Create `path` holding `data`, readable by this user only, unless it exists; return
    what the file holds. Two processes starting at once both end up with the same value:
    the content is written to a private temporary file and published with link(2), which
    fails if the name exists, so the file is never seen empty or half-written and the
    loser reads the winner's value."""
    private_dir(path.parent)
    if path.exists():
        _narrow(path, PRIVATE_FILE)
        return _read_written(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = create_private(tmp)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; its value stands
        except OSError:
            # A filesystem without hard links: create the name itself exclusively.
            _create_exclusive(path, data)
    finally:
        discard(tmp)
    return _read_written(path)


def _create_exclusive(path: Path, data: str) -> None:
    try:
        fd = create_private(path)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(data)


def _read_written(path: Path, timeout: float = 5.0) -> str:
    # Only the no-hard-link fallback can show a file still being written.
    deadline = time.monotonic() + timeout
    while True:
        value = path.read_text().strip()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for memory databases and other engines."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database or ""
    if not name or name == ":memory:" or name.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(name)


def private_sqlite(url: str, base: Path) -> None:
    """Make the SQLite file 0600 before SQLite creates it (SQLite then gives its -wal and
    -shm files the same mode), and narrow an existing one and its companions. A relative
    path is relative to `base` (Flask-SQLAlchemy reads it from the instance folder)."""
    path = sqlite_path(url)
    if path is None:
        return
    path = base / path
    if not path.parent.exists():
        private_dir(path.parent)
    try:
        os.close(create_private(path))  # an empty file is a valid new SQLite database
    except FileExistsError:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
                  path.with_name(path.name + "-journal")):
            if p.exists():
                _narrow(p, PRIVATE_FILE)
    except OSError:
        pass  # a read-only location: SQLite will say what is wrong
