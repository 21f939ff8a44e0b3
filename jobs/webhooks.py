"""Webhook delivery: drain one endpoint's waiting events (mailing/webhooks.py)."""

from __future__ import annotations

from rq import get_current_job

from . import job_context


def deliver(endpoint_id: int) -> None:
    """POST the endpoint's undelivered events in order. A failure raises, so that RQ
    retries after the configured waits; on the last retry the job queues a fresh one
    instead (the endpoint is retried until it answers or is switched off)."""
    with job_context():
        from mailing import webhooks

        job = get_current_job()
        webhooks.drain(endpoint_id, last_try=job is None or not job.retries_left)
