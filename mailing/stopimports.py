"""Stop-list CSV files too large for one web request (over STOPLIST_JOB_BYTES): the web
request only stores the file; an RQ job adds its lines in chunks with a progress bar and a
per-line report, as contact imports do.

Each chunk goes through stoplists.add_pasted, which checks every line of the chunk before its
first query, and the job holds no transaction between chunks; so on SQLite the write lock is
taken only for each chunk's inserts, never while lines are being checked, and other writers
wait at most one chunk. A chunk is all or nothing; a file that stops half way (unreadable,
worker killed) keeps the chunks already added, each logged, and adding it again only reports
those lines as already there. An item repeated in a later chunk is counted as already there
rather than as repeated."""

from __future__ import annotations

import csv
import io
import logging
import re
from typing import Any

import redis
import sqlalchemy as sa
from werkzeug.datastructures import FileStorage

from . import files, queueing, stoplists, uploads
from .extensions import checkpoint_wal, db
from .models import StopList, StopListImport, User, utcnow
from .uploads import N_

log = logging.getLogger(__name__)

# Lines per insert transaction: small enough that a web request waiting for the write
# lock (SQLite) waits a fraction of a second, large enough to keep the import fast.
CHUNK = 1000
MAX_REJECTED_KEPT = 10_000


# Stored in English, shown in the reader's language (the import page passes them through gettext).
QUEUE_DOWN = N_("The job queue is unreachable; the file was not imported. Try again later.")
FILE_GONE = N_("The uploaded file is gone; upload it again.")

# Whatever str.splitlines() would split on: one CSV row must stay one line of the pasted
# text, so that line numbers can be mapped back to the file.
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_FIRST_ON = re.compile(r"(first on line )(\d+)")


def first_column(row: list[str]) -> str:
    """A CSV row from another service as one pasted line: its first column (commas and
    semicolons inside it would otherwise split it into several items)."""
    if not row:
        return ""
    return _LINE_BREAKS.sub(" ", row[0]).replace(",", " ").replace(";", " ")


def csv_text(data: bytes) -> str:
    """A small CSV upload as pasted text, one line per row (the synchronous path)."""
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig", "replace"), newline=""))
    return "\n".join(first_column(row) for row in rows)


def start(stop: StopList, upload: FileStorage, *, actor_id: int | None) -> StopListImport:
    """Store the file (0600) and queue its import; the caller redirects to the import's page."""
    # End the request's transaction first: on SQLite it holds the write lock, and copying
    # a large file needs no database.
    db.session.commit()
    path, size = uploads.save_upload(upload)
    imp = StopListImport(list_id=stop.id, path=str(path), filename=(upload.filename or "")[:300],
                         size_bytes=size, created_by_id=actor_id, rejected=[])
    try:
        db.session.add(imp)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        files.discard(path)
        raise
    try:
        queueing.enqueue("jobs.imports.import_stoplist", imp.id)
    except redis.RedisError:
        log.exception("stop-list import %s: could not enqueue", imp.id)
        imp.state, imp.error, imp.finished_at = "failed", QUEUE_DOWN, utcnow()
        db.session.commit()
        files.discard(path)
    return imp


def _chunks(reader: Any) -> Any:
    """(lines, their line numbers in the file) in chunks of CHUNK rows."""
    while True:
        lines: list[str] = []
        numbers: list[int] = []
        for row in reader:
            if row:
                lines.append(first_column(row))
                numbers.append(reader.line_num)
            if len(lines) >= CHUNK:
                break
        if not lines:
            return
        yield lines, numbers


def _file_lines(reason: str, numbers: list[int]) -> str:
    """add_pasted numbers a chunk's lines from 1; "repeated (first on line N)" names the file's line."""
    return _FIRST_ON.sub(lambda m: m.group(1) + str(numbers[int(m.group(2)) - 1]), reason)


def run(import_id: int, region: str) -> StopListImport | None:
    """The job's work; a second run of a finished import does nothing."""
    imp = db.session.get(StopListImport, import_id, populate_existing=True)
    if imp is None or imp.state in ("done", "failed"):
        db.session.commit()
        return imp
    stop = db.session.get(StopList, imp.list_id)
    if stop is None:  # the list is being deleted (its imports go with it)
        db.session.commit()
        return None
    imp.state, imp.error = "running", None
    imp.lines = imp.added = imp.already = imp.rejected_count = 0
    imp.read_bytes, imp.rejected = 0, []
    actor: Any = (db.session.get(User, imp.created_by_id) if imp.created_by_id else None) or "import"
    db.session.commit()  # objects keep their values (expire_on_commit off): no transaction below
    rejected: list[list[Any]] = []
    try:
        with open(imp.path, "rb") as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=""))
            try:
                for lines, numbers in _chunks(reader):
                    report = stoplists.add_pasted(stop, "\n".join(lines), actor=actor, source="import",
                                                  region=region)
                    for r in report.rejected[:max(MAX_REJECTED_KEPT - len(rejected), 0)]:
                        rejected.append([numbers[r.line - 1], r.text, _file_lines(r.reason, numbers)])
                    imp.lines += len(lines)
                    imp.added += report.added
                    imp.already += report.already
                    imp.rejected_count += len(report.rejected)
                    imp.rejected = list(rejected)
                    imp.read_bytes = raw.tell()
                    db.session.commit()
                    checkpoint_wal()
            except csv.Error as exc:
                raise ValueError(f"line {reader.line_num}: {exc}") from None
        imp.state, imp.finished_at, imp.read_bytes = "done", utcnow(), imp.size_bytes
        db.session.commit()
    except (OSError, ValueError) as exc:
        db.session.rollback()
        imp = db.session.get(StopListImport, import_id, populate_existing=True)
        if imp is not None:
            imp.state, imp.finished_at = "failed", utcnow()
            imp.error = FILE_GONE if isinstance(exc, FileNotFoundError) else str(exc)
            db.session.commit()
    return imp


def recent(list_id: int, limit: int = 5) -> list[StopListImport]:
    return list(db.session.scalars(sa.select(StopListImport).where(StopListImport.list_id == list_id)
                                   .order_by(StopListImport.id.desc()).limit(limit)))
