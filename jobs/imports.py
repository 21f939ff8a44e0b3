"""The CSV import job: takes the import's id; running it twice upserts the same rows."""

from __future__ import annotations

from . import job_context


def import_csv(import_id: int) -> str:
    with job_context() as app:
        from mailing.contacts import run_import

        imp = run_import(import_id, app.config["DEFAULT_PHONE_REGION"])
        return imp.state if imp else "missing"
