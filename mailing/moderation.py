"""The automatic pre-send check: rules whose thresholds are admin settings. An issue that
fails any of them waits On moderation for a moderator instead of going out."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from . import settings
from .extensions import db
from .models import Delivery, Issue, StopEvent


@dataclass
class Failure:
    rule: str
    reason: str
    figures: dict[str, Any]


_LINK = re.compile(r"""href\s*=\s*["']?(?:https?:)?//([^/"'\s>:]+)""", re.I)


def _recent_issues(issue: Issue, n: int) -> list[tuple[int, int, int]]:
    """(total, sent, bounced) of this sender's last n launched issues."""
    return [tuple(r) for r in db.session.execute(  # type: ignore[misc]
        sa.select(Issue.total, Issue.sent_count, Issue.bounced_count)
        .where(Issue.sender_id == issue.sender_id, Issue.id != issue.id, Issue.launched_at.is_not(None))
        .order_by(Issue.launched_at.desc()).limit(n)).all()]


def check(issue: Issue) -> list[Failure]:
    """Run every rule on an issue whose recipients are materialised."""
    failures: list[Failure] = []
    audience = issue.total - issue.suppressed_count
    # 1. Audience much larger than this sender's recent issues, or than an absolute size.
    recent = _recent_issues(issue, 5)
    factor = float(settings.get("moderation_growth_factor"))
    largest = max((t for t, _s, _b in recent), default=0)
    if recent and audience > factor * largest:
        failures.append(Failure("audience_growth", f"the audience ({audience}) is more than {factor:g}× "
                                f"the largest of this sender's last {len(recent)} issues ({largest})",
                                {"audience": audience, "largest_recent": largest, "factor": factor}))
    cap = int(settings.get("moderation_max_audience"))
    if cap and audience > cap:
        failures.append(Failure("audience_size", f"the audience ({audience}) is larger than {cap}",
                                {"audience": audience, "limit": cap}))
    # 2. A large share never received a letter from this workspace (fresh imports).
    share_limit = float(settings.get("moderation_fresh_share"))
    if audience and share_limit < 1:
        d, prior = Delivery.__table__.alias("d"), Delivery.__table__.alias("prior")
        fresh = db.session.scalar(sa.select(sa.func.count()).select_from(d).where(
            d.c.issue_id == issue.id, d.c.state == "pending",
            ~sa.exists().where(prior.c.email_key == d.c.email_key, prior.c.state == "sent",
                               prior.c.issue_id != issue.id))) or 0
        if fresh / audience > share_limit and sum(t for t, _s, _b in recent) > 0:
            failures.append(Failure("fresh_audience", f"{fresh} of {audience} recipients "
                                    f"({fresh * 100 // audience} %) never got a letter from us",
                                    {"fresh": fresh, "audience": audience, "limit_share": share_limit}))
    # 3. No unsubscribe link.
    if "{{ unsubscribe_url }}" not in re.sub(r"\{\{\s*unsubscribe_url\s*\}\}", "{{ unsubscribe_url }}",
                                             issue.body_html or ""):
        failures.append(Failure("no_unsubscribe", "the letter has no {{ unsubscribe_url }} link", {}))
    # 4. Spam words and blocklisted link domains.
    text = f"{issue.subject}\n{issue.body_html}".lower()
    words = [w for w in settings.get("spam_words") if w and re.search(r"\b" + re.escape(w.lower()) + r"\b", text)]
    if words:
        failures.append(Failure("spam_words", "the letter contains listed words: " + ", ".join(words),
                                {"words": words}))
    blocked = {d.lower().strip() for d in settings.get("blocked_domains") if d.strip()}
    hits = sorted({h.lower() for h in _LINK.findall(issue.body_html or "")
                   if any(h.lower() == b or h.lower().endswith("." + b) for b in blocked)})
    if hits:
        failures.append(Failure("blocked_domains", "the letter links to blocklisted domains: " + ", ".join(hits),
                                {"domains": hits}))
    # 5. The sender's recent bounce and complaint rates.
    sent = sum(s for _t, s, _b in recent)
    bounced = sum(b for _t, _s, b in recent)
    bounce_limit = float(settings.get("moderation_bounce_rate"))
    if sent >= 20 and bounced / max(sent + bounced, 1) > bounce_limit:
        rate = bounced / (sent + bounced)
        failures.append(Failure("bounce_rate", f"this sender's recent bounce rate is {rate:.1%}",
                                {"bounced": bounced, "sent": sent, "limit": bounce_limit}))
    complaints = db.session.scalar(sa.select(sa.func.count()).select_from(StopEvent).where(
        StopEvent.source == "complaint", StopEvent.action == "add",
        StopEvent.value.in_(sa.select(Delivery.email_key).join(Issue, Issue.id == Delivery.issue_id)
                            .where(Issue.sender_id == issue.sender_id, Issue.id != issue.id)))) or 0
    complaint_limit = float(settings.get("moderation_complaint_rate"))
    if sent >= 20 and complaints / sent > complaint_limit:
        failures.append(Failure("complaint_rate", f"this sender's recent complaint rate is {complaints / sent:.2%}",
                                {"complaints": complaints, "sent": sent, "limit": complaint_limit}))
    return failures


def as_details(failures: list[Failure]) -> dict[str, Any]:
    return {"failed_rules": [asdict(f) for f in failures]}
