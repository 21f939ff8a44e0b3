"""The CSV import jobs: each takes the import's id; running one twice upserts the same rows
(contacts) or finds them already there (stop-lists). The uploaded file (personal data) is
deleted when the job ends, done or failed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from . import job_context

log = logging.getLogger(__name__)


def _run_and_discard(model: Any, import_id: int, work: Callable[[], Any]) -> str:
    """Run the import; on an unexpected error mark it failed (the page stops polling and
    says so) and re-raise for RQ's failed-job registry; delete the file either way."""
    from mailing.extensions import db
    from mailing.files import discard
    from mailing.models import utcnow
    from mailing.uploads import IMPORT_UNEXPECTED

    path = db.session.scalar(sa.select(model.path).where(model.id == import_id))
    db.session.commit()
    try:
        imp = work()
        return imp.state if imp is not None else "missing"
    except Exception:
        log.exception("import %s %s failed", model.__tablename__, import_id)
        db.session.rollback()
        imp = db.session.get(model, import_id, populate_existing=True)
        if imp is not None and imp.state not in ("done", "failed"):
            imp.state, imp.error, imp.finished_at = "failed", IMPORT_UNEXPECTED, utcnow()
        db.session.commit()
        raise
    finally:
        discard(path)


def import_csv(import_id: int) -> str:
    with job_context() as app:
        from mailing.contacts import run_import
        from mailing.models import ContactImport

        return _run_and_discard(ContactImport, import_id,
                                lambda: run_import(import_id, app.config["DEFAULT_PHONE_REGION"]))


def import_stoplist(import_id: int) -> str:
    with job_context() as app:
        from mailing import stopimports
        from mailing.models import StopListImport

        return _run_and_discard(StopListImport, import_id,
                                lambda: stopimports.run(import_id, app.config["DEFAULT_PHONE_REGION"]))
