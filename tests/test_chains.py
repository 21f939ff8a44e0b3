"""Chains: steps formed in turn by real workers over a real SMTP server, each with its
audience rule; an interrupted step sends the later ones back to Draft; delete takes a
step and exactly the later ones."""

import sqlalchemy as sa

from mailing import chains, lifecycle
from mailing.extensions import db
from mailing.models import Issue, JournalEvent

from .support import deliveries_of, issue_row, journal_of, wait_for, wait_status

TEMPORARY = "451 4.3.0 Temporary local problem"
PERMANENT = "550 5.1.1 No such mailbox"


def states_of(issue_id: int) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in deliveries_of(issue_id):
        out.setdefault(d.state, set()).add(d.email)
    return out


def test_three_step_chain_follows_sent_then_not_reached(ctx, make_issue, smtp, workers, make_user):
    step1 = make_issue(12, subject="Welcome")
    emails = sorted(d.email for d in _members(step1))
    user, _ = make_user("editor")
    step2 = chains.add_step(step1, user, audience="sent", delay_seconds=0)
    step3 = chains.add_step(step1, user, audience="not_reached", delay_seconds=0)
    bounced_1, failed_2, bounced_2 = emails[:2], emails[2:5], emails[5]
    script = smtp.handler.scripted
    for e in bounced_1:
        script[e] = [PERMANENT]  # bounced by step 1: never in step 2
    for e in failed_2:
        script[e] = ["", TEMPORARY, TEMPORARY]  # step 1 delivers, step 2 fails twice: failed
    script[bounced_2] = ["", PERMANENT]  # step 2 bounces it: never in step 3
    workers.start(1, MAX_ATTEMPTS="2")
    lifecycle.launch(step1, user)
    wait_status(step3, "sent", 90)

    one, two, three = states_of(step1), states_of(step2), states_of(step3)
    assert one == {"sent": set(emails[2:]), "bounced": set(bounced_1)}
    assert set().union(*two.values()) == one["sent"], "step 2 goes to those step 1 was sent to"
    assert two == {"sent": set(emails[6:]), "failed": set(failed_2), "bounced": {bounced_2}}
    assert three == {"sent": set(failed_2)}, "step 3 goes to those step 2 did not reach, not the bounced"
    counts = smtp.handler.counts()
    assert {e: counts[e] for e in failed_2} == dict.fromkeys(failed_2, 2)  # step 1 and step 3
    assert all(counts[e] == 2 for e in emails[6:])  # steps 1 and 2
    assert counts[bounced_2] == 1 and not any(counts[e] for e in bounced_1)
    rows = [issue_row(i) for i in (step1, step2, step3)]
    assert [(r.total, r.sent_count, r.bounced_count, r.failed_count) for r in rows] == \
        [(12, 10, 2, 0), (10, 6, 1, 3), (3, 3, 0, 0)]
    events = [e.event for e in journal_of(step2) if e.event in ("created", "chain_due", "send_now", "start")]
    assert events == ["created", "chain_due", "send_now", "start"], "formed and started as any issue"
    assert rows[1].started_at >= rows[0].finished_at


def test_interrupted_step_turns_later_steps_into_drafts(ctx, make_issue, smtp, workers, make_user):
    step1 = make_issue(6, subject="Part one")
    emails = sorted(c.email for c in _members(step1))
    user, _ = make_user("editor")
    step2 = chains.add_step(step1, user, audience="all", delay_seconds=2)
    step3 = chains.add_step(step2, user, audience="not_reached", delay_seconds=0)
    smtp.handler.scripted[emails[0]] = ["", TEMPORARY]  # step 2 fails it (one attempt allowed)
    workers.start(1, MAX_ATTEMPTS="1")
    lifecycle.launch(step1, user)
    wait_status(step1, "sent", 60)
    wait_status(step2, "scheduled", 10)  # due 2 s after step 1
    smtp.stop()  # the relay goes away before step 2 starts
    wait_status(step2, "interrupted", 60)
    # The hook runs just after the interrupt commits.
    reset = wait_for(lambda: [e for e in journal_of(step3) if e.event == "chain_reset"], 10,
                     what="step 3 to be reset")
    assert issue_row(step3).status == "draft"
    assert len(reset) == 1 and reset[0].reason.startswith("step 2 was interrupted")
    assert issue_row(step3).status_reason == reset[0].reason

    smtp.start()
    lifecycle.resume(step2, user)
    wait_status(step2, "sent", 60)
    # Resumed and finished: the reset step waits for a person to relaunch it.
    assert issue_row(step3).status == "draft"
    lifecycle.launch(step3, user)
    wait_status(step3, "sent", 60)
    assert states_of(step3) == {"sent": {emails[0]}}, "relaunched, to those step 2 did not reach"


def test_a_step_is_not_launched_before_the_previous_one_ends(ctx, make_issue, make_user, api_client):
    step1 = make_issue(3)
    user, _ = make_user("editor")
    step2 = chains.add_step(step1, user, audience="sent")
    api = api_client("editor")
    r = api.post(f"/issues/{step2}/launch", json={"mode": "now"})
    assert r.status_code == 409 and "step 1" in r.get_json()["message"]
    assert issue_row(step2).status == "draft"


def delete(api, path: str):
    return api.client.delete("/api/v1" + path, headers=api.headers)


def _members(issue_id: int):
    from mailing.models import Contact, list_members

    issue = db.session.get(Issue, issue_id)
    return db.session.scalars(sa.select(Contact).join(list_members, list_members.c.contact_id == Contact.id)
                              .where(list_members.c.list_id == issue.list_id)).all()


def _set_sent(issue_id: int, total: int) -> None:
    # Test set-up only: a first step that went out and has statistics.
    db.session.execute(sa.update(Issue).where(Issue.id == issue_id)
                       .values(status="sent", total=total, sent_count=total))
    db.session.commit()


def test_delete_takes_exactly_the_later_steps(ctx, make_issue, make_user, api_client):
    other = make_issue(2, subject="Unrelated")
    step1 = make_issue(4, subject="First")
    user, _ = make_user("editor")
    step2 = chains.add_step(step1, user)
    step3 = chains.add_step(step1, user, audience="sent", delay_seconds=3600)
    step4 = chains.add_step(step1, user, audience="not_reached")
    _set_sent(step1, 4)
    api = api_client("editor")

    r = delete(api, f"/issues/{step1}")
    assert r.status_code == 409 and "draft" in r.get_json()["message"], "a step with statistics stays"
    r = api.get(f"/issues/{step3}/steps")
    assert [s["step"] for s in r.get_json()["steps"]] == [1, 2, 3, 4]

    r = delete(api, f"/issues/{step3}")
    assert r.status_code == 200 and r.get_json()["deleted"] == [step3, step4]
    db.session.expire_all()
    assert {i for i in db.session.scalars(sa.select(Issue.id))} >= {other, step1, step2}
    assert db.session.get(Issue, step3) is None and db.session.get(Issue, step4) is None
    # Their journal stays, with the title and no issue.
    kept = db.session.scalars(sa.select(JournalEvent).where(JournalEvent.issue_id.is_(None),
                                                            JournalEvent.event == "delete")).all()
    assert sorted(e.details["issue_id"] for e in kept) == [step3, step4]
    assert all(e.issue_title == "First" for e in kept)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(JournalEvent).where(
        JournalEvent.issue_title == "First", JournalEvent.event == "created")) == 2
    db.session.commit()

    r = delete(api, f"/issues/{step2}")
    assert r.status_code == 200 and r.get_json()["deleted"] == [step2]
    row = issue_row(step1)
    assert (row.chain_root_id, row.chain_step) == (None, None), "the first step alone is no chain"
    assert delete(api, f"/issues/{other}").get_json()["deleted"] == [other]
    assert delete(api, f"/issues/{other}").status_code == 404


def test_delete_refuses_a_chain_with_a_step_under_way(ctx, make_issue, make_user):
    step1 = make_issue(3)
    user, _ = make_user("editor")
    step2 = chains.add_step(step1, user)
    db.session.execute(sa.update(Issue).where(Issue.id == step2).values(status="scheduled"))
    db.session.commit()
    import pytest

    with pytest.raises(chains.IllegalTransition) as err:
        chains.delete(step1, user)
    assert "step 2" in err.value.message
    db.session.expire_all()
    assert db.session.get(Issue, step1) is not None and db.session.get(Issue, step2) is not None


def test_steps_api_and_roles(ctx, make_issue, api_client):
    step1 = make_issue(3)
    support = api_client("support")
    r = support.post(f"/issues/{step1}/steps", json={"audience": "sent"})
    assert r.status_code == 403
    editor = api_client("editor")
    for bad in ({"audience": "everyone"}, {"delay_seconds": -1}, {"delay_seconds": "x"},
                {"at": "yesterday"}, {"at": "2000-01-01T00:00:00Z"}, [1]):
        r = editor.post(f"/issues/{step1}/steps", json=bad)
        assert r.status_code == 400, (bad, r.get_json())
    assert support.get(f"/issues/{step1}/steps").get_json()["steps"] == []
    r = editor.post(f"/issues/{step1}/steps", json={"audience": "not_reached", "delay_seconds": 7200})
    assert r.status_code == 201
    body = r.get_json()
    assert body["chain"] == {"step": 2, "of": 2, "audience": "not_reached", "delay_seconds": 7200,
                             "at": None, "due_at": None, "previous_id": step1}
    assert body["status"] == "draft"
    steps = support.get(f"/issues/{step1}/steps").get_json()["steps"]
    assert [(s["id"], s["step"]) for s in steps] == [(step1, 1), (body["id"], 2)]
