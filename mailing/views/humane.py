"""What people read instead of what the program stores: times in the reader's own zone and
language, durations in words, counts with their nouns, and a sentence for each journal
event and for the settings an issue was launched with.

Each journal event has a small formatter of its details; an event without one is told by
its name in the reader's words and nothing else, never as raw JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask_babel import (
    format_datetime,
    format_decimal,
    format_number,
    format_percent,
    format_timedelta,
    get_locale,
    get_timezone,
    ngettext,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from ..enums import IssueStatus
from ..states import LABELS

# --- times, durations, numbers -------------------------------------------------------


def zone_name() -> str:
    """The reader's time zone as its IANA name (UTC unless the profile says otherwise)."""
    return str(get_timezone() or "UTC")


def when(value: datetime | None, seconds: bool = False) -> Markup:
    """A stored (UTC) moment in the reader's zone, the zone named beside it; <time> carries
    the exact instant for machines."""
    if value is None:
        return Markup("—")
    text = format_datetime(value, "d MMM y, HH:mm:ss" if seconds else "d MMM y, HH:mm")
    utc = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    iso = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{}">{} <span class="tz">{}</span></time>').format(iso, text, zone_name())


def duration(seconds: float | None) -> str:
    """"about 4 minutes", in the reader's language."""
    if seconds is None:
        return ""
    return format_timedelta(timedelta(seconds=max(float(seconds), 0)), threshold=1.5)


def num(value: Any) -> str:
    """1,985 / 1 985: a count as the reader's language writes it."""
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return format_decimal(value)
    return format_number(int(value))


def recipient_count(n: int) -> str:
    return ngettext("%(count)s recipient", "%(count)s recipients", n, count=num(n))


# --- the settings in force at launch ---------------------------------------------------


def _seconds(v: Any) -> str:
    return duration(v)


def _minutes(v: Any) -> str:
    return duration(float(v) * 60)


def _share(v: Any) -> str:
    return f"{format_decimal(float(v) * 100)} %"


def _onoff(v: Any) -> str:
    return _("yes") if v else _("no")


def _words(v: Any) -> str:
    return ", ".join(str(x) for x in v) if v else _("none")


def _count_or_none(v: Any) -> str:
    return num(v) if v else _("none")


# key → (what it is, how its value reads)
SETTING_TEXT: dict[str, tuple[Any, Callable[[Any], str]]] = {
    "launch_delay_seconds": (_l("Launch delay"), _seconds),
    "edit_lock_minutes": (_l("Edit lock before a scheduled send"), _minutes),
    "late_start_grace_seconds": (_l("Late-start grace"), _seconds),
    "default_portion_size": (_l("Default portion size"), _count_or_none),
    "default_portion_minutes": (_l("Default minutes between portions"), _count_or_none),
    "relay_rate_per_second": (_l("Relay cap, letters per second"), _count_or_none),
    "pacing_quiet_seconds": (_l("Pacing: quiet time before recovering"), _seconds),
    "pacing_step_seconds": (_l("Pacing: recovery step"), _seconds),
    "per_sender_unsubscribe": (_l("Unsubscribes stop only that sender's letters"), _onoff),
    "moderation_growth_factor": (_l("Hold when the audience grows more than"), lambda v: f"× {num(v)}"),
    "moderation_max_audience": (_l("Hold when the audience exceeds"), _count_or_none),
    "moderation_fresh_share": (_l("Hold when this share never got a letter"), _share),
    "moderation_bounce_rate": (_l("Hold when the bounce rate exceeds"), _share),
    "moderation_complaint_rate": (_l("Hold when the complaint rate exceeds"), _share),
    # What an issue keeps of the moment it was launched.
    "send_concurrency": (_l("Relay connections per worker"), num),
    "send_jobs": (_l("Workers sending it at once"), num),
    "spread_size": (_l("Portion size"), lambda v: recipient_count(int(v))),
    "spread_interval": (_l("Time between portions"), _seconds),
    "spread_hours": (_l("Spread over"), lambda v: duration(float(v) * 3600)),
    "audience": (_l("Audience at launch"), lambda v: recipient_count(int(v))),
    "suppressed_at_launch": (_l("Stop-listed at launch"), num),
    "spam_words": (_l("Spam words"), _words),
    "blocked_domains": (_l("Blocklisted link domains"), _words),
    "webhook_failure_limit": (_l("Switch a webhook endpoint off after failed deliveries in a row"), num),
}


def setting_line(key: str, value: Any) -> str:
    label, show = SETTING_TEXT.get(key, (key.replace("_", " ").capitalize(), str))
    try:
        shown = show(value)
    except (TypeError, ValueError):
        shown = str(value)
    return f"{label}: {shown}"


def launch_settings(values: dict[str, Any] | None) -> list[str]:
    """The settings an issue was launched with, one line each; nothing when none were kept."""
    return [setting_line(k, v) for k, v in sorted((values or {}).items()) if v is not None]


ROLE_LABELS = {"admin": _l("administrator"), "editor": _l("editor"), "moderator": _l("moderator"),
               "support": _l("support")}

STATE_LABELS = {"pending": _l("waiting"), "sending": _l("being sent"), "sent": _l("sent"),
                "deferred": _l("deferred, will be retried"), "bounced": _l("bounced"), "failed": _l("failed"),
                "suppressed": _l("stop-listed"), "stopped_manually": _l("stopped (by hand)")}


def state_label(state: str) -> str:
    return str(STATE_LABELS.get(state, state))


# --- pre-send check rules ---------------------------------------------------------------

RULE_NAMES = {
    "audience_growth": _l("Audience much larger than usual"),
    "audience_size": _l("Audience over the cap"),
    "fresh_audience": _l("Many recipients never got a letter from us"),
    "no_unsubscribe": _l("No unsubscribe link"),
    "bounce_rate": _l("The sender's bounce rate is high"),
    "complaint_rate": _l("The sender's complaint rate is high"),
    "spam_words": _l("Words that spam filters dislike"),
    "blocked_domains": _l("Links to blocklisted domains"),
}


def rule_name(rule: str) -> str:
    return str(RULE_NAMES.get(rule, rule.replace("_", " ").capitalize()))


def _pct(part: float, whole: float) -> str:
    return format_percent(part / whole if whole else 0, "#,##0.##%")


def rule_reason(rule: str, figures: dict[str, Any] | None, stored: str = "") -> str:
    """Why the pre-send check held an issue, in the reader's language, from the figures the
    check kept (the stored English sentence when they are missing)."""
    f = figures or {}
    try:
        if rule == "audience_growth":
            return _("the audience (%(n)s) is more than %(f)s × the largest of this sender's recent issues (%(m)s)",
                     n=num(f["audience"]), f=num(f["factor"]), m=num(f["largest_recent"]))
        if rule == "audience_size":
            return _("the audience (%(n)s) is larger than %(cap)s", n=num(f["audience"]), cap=num(f["limit"]))
        if rule == "fresh_audience":
            return ngettext("%(count)s of %(n)s recipient never got a letter from us (%(pct)s)",
                            "%(count)s of %(n)s recipients never got a letter from us (%(pct)s)",
                            int(f["audience"]), count=num(f["fresh"]), n=num(f["audience"]),
                            pct=_pct(f["fresh"], f["audience"]))
        if rule == "no_unsubscribe":
            return _("the letter has no {{ unsubscribe_url }} link")
        if rule == "spam_words":
            return _("the letter contains listed words: %(words)s", words=", ".join(f["words"]))
        if rule == "blocked_domains":
            return _("the letter links to blocklisted domains: %(domains)s", domains=", ".join(f["domains"]))
        if rule == "bounce_rate":
            return _("this sender's recent bounce rate is %(rate)s",
                     rate=_pct(f["bounced"], f["sent"] + f["bounced"]))
        if rule == "complaint_rate":
            return _("this sender's recent complaint rate is %(rate)s", rate=_pct(f["complaints"], f["sent"]))
    except (KeyError, TypeError, ValueError):
        pass
    return stored


# --- the journal ---------------------------------------------------------------------

EVENT_NAMES = {
    "created": _l("Created"), "edited": _l("Edited"), "test_letter": _l("Test letter"),
    "launch": _l("Launched"), "hold": _l("Held for moderation"), "schedule": _l("Scheduled"),
    "unschedule": _l("Returned to draft"), "send_now": _l("Sent now"), "approve": _l("Approved"),
    "reject": _l("Rejected"), "start": _l("Started"), "pause": _l("Paused"), "resume": _l("Resumed"),
    "send_whole": _l("Released whole"), "cancel": _l("Cancelled"), "stopped": _l("Marked cancelled"),
    "interrupt": _l("Interrupted"), "finish": _l("Finished"), "pause_settled": _l("Pause settled"),
    "chain_due": _l("Made due in its chain"), "chain_reset": _l("Returned to draft"),
    "copy": _l("Copied"), "resend": _l("Resent"), "delete": _l("Deleted"), "settings": _l("Settings changed"),
    "pace_slowed": _l("Pace slowed"), "pace_recovered": _l("Pace recovered"),
    # Webhook endpoints (mailing/webhooks.py; journal rows without an issue).
    "webhook_created": _l("Webhook endpoint added"), "webhook_deleted": _l("Webhook endpoint deleted"),
    "webhook_enabled": _l("Webhook endpoint switched on"), "webhook_disabled": _l("Webhook endpoint switched off"),
    "webhook_secret_rolled": _l("Webhook secret rolled"),
}

HOW = {"ui": _l("on the page"), "api": _l("through the API"), "import": _l("from a file"),
       "card": _l("on the contact's card"), "complaint": _l("by a spam complaint"),
       "link": _l("by the unsubscribe link"), "one-click": _l("by one-click unsubscribe")}


def source_label(source: str | None) -> str:
    """How a stop-list entry came in, in words ("on the page" rather than "ui")."""
    return str(HOW.get(source or "", source or ""))


def event_name(event: str) -> str:
    return str(EVENT_NAMES.get(event, event.replace("_", " ").capitalize()))


def status_label(status: str | None) -> str:
    if not status:
        return ""
    try:
        return str(LABELS[IssueStatus(status)])
    except ValueError:
        return status


def _d_pause(d: dict[str, Any]) -> list[str]:
    out = []
    if "done_at_click" in d:
        out.append(ngettext("%(count)s recipient done when it was clicked",
                            "%(count)s recipients done when it was clicked", int(d["done_at_click"]),
                            count=num(d["done_at_click"])))
    return out


def _d_pause_settled(d: dict[str, Any]) -> list[str]:
    out = []
    if "left_after_click" in d:
        out.append(ngettext("%(count)s letter left after the click (already on its way)",
                            "%(count)s letters left after the click (already on their way)",
                            int(d["left_after_click"]), count=num(d["left_after_click"])))
    if "done" in d:
        out.append(ngettext("%(count)s recipient done in all", "%(count)s recipients done in all",
                            int(d["done"]), count=num(d["done"])))
    return out


def _d_hold(d: dict[str, Any]) -> list[str]:
    return [f"{rule_name(f.get('rule', ''))}: {rule_reason(f.get('rule', ''), f.get('figures'), f.get('reason', ''))}"
            for f in d.get("failed_rules", []) if isinstance(f, dict)]


def _d_settings(d: dict[str, Any]) -> list[str]:
    changed, before = d.get("changed") or {}, d.get("before") or {}
    if not changed:
        return [_("nothing changed")]
    out = []
    for k, v in sorted(changed.items()):
        line = setting_line(k, v)
        if k in before:
            old = setting_line(k, before[k]).split(": ", 1)[-1]
            line = _("%(setting)s (was %(old)s)", setting=line, old=old)
        out.append(line)
    return out


def _d_test_letter(d: dict[str, Any]) -> list[str]:
    out = [_("to %(to)s", to=d["to"])] if d.get("to") else []
    if d.get("as") and d.get("as") != d.get("to"):
        out.append(_("as %(who)s", who=d["as"]))
    if d.get("reply"):
        out.append(_("server response: %(reply)s", reply=d["reply"]))
    return out


def _d_interrupt(d: dict[str, Any]) -> list[str]:
    return [_("server response: %(reply)s", reply=d["last_reply"])] if d.get("last_reply") else []


def _d_copy(d: dict[str, Any]) -> list[str]:
    if d.get("copied_from"):
        return [_("copied from #%(id)s", id=d["copied_from"])]
    if d.get("copy"):
        return [_("copy: #%(id)s", id=d["copy"])]
    return []


def _d_counts(d: dict[str, Any]) -> list[str]:
    """A launch's formed audience."""
    out = []
    if "total" in d:
        out.append(recipient_count(int(d["total"])))
    if d.get("suppressed"):
        out.append(ngettext("%(count)s of them stop-listed", "%(count)s of them stop-listed",
                            int(d["suppressed"]), count=num(d["suppressed"])))
    return out


def _d_webhook(d: dict[str, Any]) -> list[str]:
    out = [_("endpoint #%(id)s (%(url)s)", id=d.get("endpoint_id"), url=d.get("url", ""))]
    if d.get("failures"):
        out.append(ngettext("after %(count)s failed delivery in a row", "after %(count)s failed deliveries in a row",
                            int(d["failures"]), count=num(d["failures"])))
    return out


DETAILS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "launch": _d_counts, "send_now": _d_counts, "schedule": _d_counts, "approve": _d_counts,
    "pause": _d_pause, "pause_settled": _d_pause_settled, "hold": _d_hold, "settings": _d_settings,
    "test_letter": _d_test_letter, "interrupt": _d_interrupt, "copy": _d_copy,
    **{e: _d_webhook for e in ("webhook_created", "webhook_deleted", "webhook_enabled", "webhook_disabled",
                              "webhook_secret_rolled")},
}


def _generic(d: dict[str, Any]) -> list[str]:
    """An event without its own formatter: each detail as "what: value" in words."""
    out = []
    for k, v in d.items():
        if k == "source":
            continue
        if isinstance(v, bool):
            v = _onoff(v)
        elif isinstance(v, (int, float)):
            v = num(v)
        elif isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = "; ".join(f"{kk.replace('_', ' ')}: {vv}" for kk, vv in v.items())
        out.append(f"{k.replace('_', ' ')}: {v}")
    return out


def journal_details(event: str, details: dict[str, Any] | None) -> str:
    """The details of one journal row as one sentence."""
    d = details if isinstance(details, dict) else {}
    parts = (DETAILS.get(event) or _generic)(d) if d else []
    source = d.get("source") or d.get("how")
    if source in HOW:
        parts.append(str(HOW[source]))
    return "; ".join(p for p in parts if p)


# The system stop-lists' names as people read them; the stored name (English) is also the
# reason a suppressed delivery keeps, so either the list or that name is accepted.
SYSTEM_LIST_NAMES = {"unsubscribed": _l("Unsubscribed from all"), "blocked": _l("Blocked manually"),
                     "sender_unsubscribed": _l("Unsubscribed from senders"), "undeliverable": _l("Undeliverable")}
_BY_STORED_NAME = {"Unsubscribed from all": "unsubscribed", "Blocked manually": "blocked",
                   "Unsubscribed from senders": "sender_unsubscribed", "Undeliverable": "undeliverable"}


def list_name(value: Any) -> str:
    """A stop-list's name in the reader's language: a team's own list as they named it."""
    code = getattr(value, "code", None) or _BY_STORED_NAME.get(str(value or ""))
    if code in SYSTEM_LIST_NAMES:
        return str(SYSTEM_LIST_NAMES[code])
    return getattr(value, "name", None) or str(value or "")


def init_app(app: Flask) -> None:
    app.add_template_filter(list_name)
    app.add_template_global(get_locale)  # <html lang> and the language switch
    app.add_template_filter(when)
    app.add_template_filter(duration)
    app.add_template_filter(num)
    app.add_template_global(recipient_count)
    app.add_template_global(zone_name)
    app.add_template_global(launch_settings)
    app.add_template_global(rule_name)
    app.add_template_global(rule_reason)
    app.add_template_global(event_name)
    app.add_template_global(status_label)
    app.add_template_global(journal_details)
    app.add_template_global(state_label)
    app.add_template_global(source_label)
    app.add_template_global(ROLE_LABELS, "ROLE_LABELS")
