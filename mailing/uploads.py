"""Request size limits and uploaded files.

Every request body is capped at MAX_CONTENT_LENGTH (2 MB); the import routes take up to
MAX_IMPORT_BYTES (100 MB). The check runs before any other request hook (CSRF, login) and
looks at the Content-Length header only, so an oversized body is refused without being
read; a body sent without a length is cut off by Werkzeug as soon as it passes the cap.
The refusal (413) is answered by mailing/errors.py with `too_large_message()`.
Uploads are kept in instance/imports/, 0600, until their import job ends."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, current_app, request
from flask_babel import gettext as _
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from . import files


def N_(message: str) -> str:  # noqa: N802  (marks a message for extraction; gettext translates it when shown)
    return message


# Stored in an import's error (in English); the import pages show it translated.
IMPORT_UNEXPECTED = N_("The import stopped on an unexpected error; the worker's log has the details.")

# Routes that take a file (or a long paste) to import.
IMPORT_ENDPOINTS = frozenset({"contacts.list_import", "stoplists.add", "api.start_import"})


def init_app(app: Flask) -> None:
    # First of all request hooks: CSRF's hook reads the form, and so would anything after it.
    app.before_request_funcs.setdefault(None, []).insert(0, _limit)


def _limit() -> None:
    if request.endpoint in IMPORT_ENDPOINTS:
        request.max_content_length = current_app.config["MAX_IMPORT_BYTES"]
    length, limit = request.content_length, request.max_content_length
    if length is not None and limit is not None and length > limit:
        raise RequestEntityTooLarge()


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.3g}"


def too_large_message() -> str:
    """Why the current request was refused with 413, and the limit that applied."""
    length, limit = request.content_length, request.max_content_length
    if limit is not None and length is not None and length <= limit:
        # The whole body was allowed, one text field of it was not (MAX_FORM_MEMORY_SIZE).
        return _("A text field is too long: at most %(kb)s KB.", kb=(request.max_form_memory_size or 0) // 1024)
    if request.endpoint in IMPORT_ENDPOINTS:
        return _("The file is too large: imports take at most %(mb)s MB. Split it into smaller files.",
                 mb=_mb(limit or 0))
    return _("The request is too large: at most %(mb)s MB.", mb=_mb(limit or 0))


def upload_size(storage: FileStorage) -> int:
    stream = storage.stream
    position = stream.tell()
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(position)
    return size


def save_upload(storage: FileStorage) -> tuple[Path, int]:
    """Keep an uploaded file for its import job: a new 0600 file in instance/imports/
    (a 0700 folder); (path, size). The job deletes it when it ends."""
    return files.save_private(storage.stream, Path(current_app.instance_path) / "imports")
