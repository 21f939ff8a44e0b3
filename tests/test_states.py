"""The state machine: every (status, action) pair, legal or not."""

import pytest
import sqlalchemy as sa

from mailing.extensions import db
from mailing.models import Issue, JournalEvent
from mailing.states import ACTIONS, IllegalTransition, IssueStatus, available_actions, transition


def _set_status(issue_id: int, status: str) -> None:
    # Test set-up only: put the row in the status under test.
    db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(status=status))
    db.session.commit()


PAIRS = [(s, a) for s in IssueStatus for a in ACTIONS]


@pytest.mark.parametrize(("status", "action"), PAIRS, ids=[f"{s}-{a}" for s, a in PAIRS])
def test_every_status_action_pair(ctx, make_issue, status, action):
    issue_id = make_issue(1)
    _set_status(issue_id, status)
    before = db.session.scalar(sa.select(sa.func.count()).select_from(JournalEvent))
    if status in ACTIONS[action].sources:
        old, new = transition(issue_id, action, actor="tester", reason="because")
        assert (old, new) == (status, ACTIONS[action].target)
        assert db.session.get(Issue, issue_id).status == new
        events = db.session.scalars(sa.select(JournalEvent).order_by(JournalEvent.id)).all()
        assert len(events) == before + 1
        e = events[-1]
        assert (e.event, e.from_status, e.to_status, e.actor_label, e.reason) == \
            (action, status, new, "tester", "because")
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(issue_id, action, actor="tester")
        assert status in err.value.message or str(err.value.message)
        assert "cannot be" in err.value.message
        db.session.expire_all()
        assert db.session.get(Issue, issue_id).status == status
        assert db.session.scalar(sa.select(sa.func.count()).select_from(JournalEvent)) == before


def test_refusal_reads_naturally(ctx, make_issue):
    issue_id = make_issue(1)
    _set_status(issue_id, "cancelled")
    with pytest.raises(IllegalTransition) as err:
        transition(issue_id, "resume")
    assert err.value.message == "a cancelled issue cannot be resumed"


def test_only_legal_actions_are_offered():
    assert available_actions("sending") == ["pause", "send_whole", "cancel"]
    assert available_actions("paused") == ["resume", "send_whole", "cancel"]
    assert available_actions("cancelled") == []
    assert available_actions("sent") == []
    assert available_actions("accepted") == ["pause", "cancel"]
