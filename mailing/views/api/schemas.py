"""The shapes the API accepts and answers, as pydantic models. base.py checks every request
against them and builds the OpenAPI document from them: change a shape here and both the
check and the document follow.

Request models forbid fields they do not know, so a misspelt field is a 400 that names it
instead of being silently ignored. Moments are ISO 8601 in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt
from spectree.model_adapter.pydantic_adapter import BaseFile

# An id: a whole number (not "7", not 7.0, not true) that an INTEGER column can hold.
IdInt = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str):  # pydantic would read a number as seconds since 1970
        raise ValueError("give an ISO 8601 date and time, such as 2030-01-31T09:00:00Z")
    return value


# A moment given in a body: ISO 8601 text only; without a zone it is UTC.
Moment = Annotated[datetime, BeforeValidator(_iso_text)]


class Body(BaseModel):
    """A request body: unknown fields are refused, numbers must be numbers."""

    model_config = ConfigDict(extra="forbid")


class Query(BaseModel):
    """A query string: unknown parameters are ignored (caches and proxies add their own)."""

    model_config = ConfigDict(extra="ignore")


class ErrorOut(BaseModel):
    error: str = Field(description="A short code, or the name of the field at fault")
    message: str = Field(description="A sentence for a person")


class Page(Query):
    cursor: str | None = Field(None, max_length=100, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=200)


class Paged(BaseModel):
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


# --- issues ---------------------------------------------------------------------

IssueStatus = Literal["draft", "scheduled", "moderation", "accepted", "sending", "paused", "stopping",
                      "cancelled", "interrupted", "sent"]
DeliveryStateName = Literal["pending", "sending", "deferred", "sent", "bounced", "failed", "suppressed",
                            "stopped"]


class StatesOut(BaseModel):
    sent: int
    bounced: int
    failed: int
    suppressed: int
    stopped_manually: int
    deferred: int


class ProgressOut(BaseModel):
    total: int
    sent: int
    failed: int = Field(description="bounced and failed together; see states for each")
    suppressed: int
    stopped: int
    remaining: int
    percent: float
    rate_per_s: float
    eta_s: int | None
    states: StatesOut


class SpreadOut(BaseModel):
    size: int | None
    interval_s: int | None
    released: bool
    next_portion_at: datetime | None


class ChainOut(BaseModel):
    step: int
    of: int
    audience: str
    delay_seconds: int | None
    at: datetime | None
    due_at: datetime | None
    previous_id: int | None


class IssueOut(BaseModel):
    id: int
    subject: str
    status: IssueStatus
    kind: Literal["issue", "triggered"]
    status_reason: str | None
    interrupt_kind: str | None
    sender_id: int | None
    list_id: int | None
    send_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut
    spread: SpreadOut
    actions: list[str] = Field(description="What may be done to it now")
    last_reply: str | None
    chain: ChainOut | None
    resent_from_id: int | None
    resend_audience: str | None


class IssueFullOut(IssueOut):
    """One issue with its letter, as a draft's editor sees it."""

    body_html: str
    body_text: str
    preheader: str
    from_name: str
    reply_to: str
    custom_headers: str
    trigger_on_join: bool
    spread_hours: float | None


class IssuesOut(Paged):
    issues: list[IssueOut]


class IssuesQuery(Page):
    status: Literal["", "draft", "scheduled", "moderation", "accepted", "sending", "paused", "interrupted",
                    "sent", "cancelled", "finished", "all"] = Field(
        "", description="empty: every issue not finished")


class DraftIn(Body):
    """An issue's letter and settings, as the editor's form has them. On update, fields
    left out keep their value."""

    subject: str = Field(min_length=1, max_length=300)
    sender_id: IdInt
    list_id: IdInt
    body_html: str = Field(min_length=1, max_length=500_000)
    body_text: str = Field("", max_length=500_000)
    preheader: str = Field("", max_length=300)
    from_name: str = Field("", max_length=200)
    reply_to: str = Field("", max_length=254)
    custom_headers: str = Field("", max_length=10_000, description="one `Name: value` a line")
    kind: Literal["issue", "triggered"] = "issue"
    trigger_on_join: StrictBool = False
    spread: Literal["none", "portions", "hours"] = "none"
    portion_size: StrictInt | None = Field(None, ge=1, le=10_000_000)
    portion_minutes: float | None = Field(None, ge=0.01, le=10_080)
    spread_hours: float | None = Field(None, ge=0.01, le=720)


class DraftPatch(Body):
    subject: str | None = Field(None, min_length=1, max_length=300)
    sender_id: IdInt | None = None
    list_id: IdInt | None = None
    body_html: str | None = Field(None, min_length=1, max_length=500_000)
    body_text: str | None = Field(None, max_length=500_000)
    preheader: str | None = Field(None, max_length=300)
    from_name: str | None = Field(None, max_length=200)
    reply_to: str | None = Field(None, max_length=254)
    custom_headers: str | None = Field(None, max_length=10_000)
    kind: Literal["issue", "triggered"] | None = None
    trigger_on_join: StrictBool | None = None
    spread: Literal["none", "portions", "hours"] | None = None
    portion_size: StrictInt | None = Field(None, ge=1, le=10_000_000)
    portion_minutes: float | None = Field(None, ge=0.01, le=10_080)
    spread_hours: float | None = Field(None, ge=0.01, le=720)


class LaunchIn(Body):
    mode: Literal["now", "at", "postpone"] = "now"
    send_at: Moment | None = Field(None, description="with mode at")


class ResumeIn(Body):
    comment: str = Field("", max_length=2000, description="required of an admin after a rate interrupt")


class PreviewQuery(Query):
    as_: str = Field("", alias="as", max_length=254, description="the contact whose letter to show")


class PreviewOut(BaseModel):
    subject: str
    html: str
    recipient: str


class TestIn(Body):
    email: str = Field(min_length=3, max_length=254)
    contact: str = Field("", max_length=254, description="whose letter (empty: the address's own contact)")


class TestOut(BaseModel):
    ok: bool
    reply: str


class DeliveriesQuery(Page):
    state: DeliveryStateName | None = None


class DeliveryOut(BaseModel):
    id: int
    email: str
    name: str
    state: str
    attempts: int
    reply: str | None
    reason: str | None
    message_id: str | None
    sent_at: datetime | None
    next_attempt_at: datetime | None


class DeliveriesOut(Paged):
    deliveries: list[DeliveryOut]


class JournalQuery(Page):
    issue: int | None = Field(None, ge=1, le=2**31 - 1)
    event: str | None = Field(None, max_length=40)


class EventOut(BaseModel):
    id: int
    at: datetime
    issue_id: int | None
    issue_title: str | None
    actor: str
    event: str
    from_status: str | None
    to_status: str | None
    reason: str | None
    details: dict[str, Any]


class JournalOut(Paged):
    events: list[EventOut]


class DeletedOut(BaseModel):
    deleted: list[int]


class ResendIn(Body):
    audience: Literal["all", "not_reached"]


class ResendCountsOut(BaseModel):
    all: int
    not_reached: int


class StepIn(Body):
    audience: Literal["all", "sent", "not_reached"] = "all"
    delay_seconds: StrictInt | None = Field(None, ge=0, le=366 * 86400)
    at: Moment | None = None


class StepOut(BaseModel):
    id: int
    step: int | None
    subject: str
    status: IssueStatus
    chain: ChainOut | None


class StepsOut(BaseModel):
    steps: list[StepOut]


class AssembleIn(Body):
    material_ids: list[IdInt] = Field(max_length=500)
    template_id: IdInt | None = None
    section_ids: list[IdInt] | None = Field(None, max_length=500)


class AssembledOut(IssueOut):
    body_html: str


# --- triggered mailings -----------------------------------------------------------

class ParticipantIn(Body):
    email: str | None = Field(None, max_length=254)
    contact_id: IdInt | None = None
    name: str | None = Field(None, max_length=200)
    fields: dict[str, str | int | float | bool | None] | None = None
    idempotency_key: str | None = Field(None, max_length=200, description="or the Idempotency-Key header")


class ParticipantOut(BaseModel):
    participant_id: int | None
    delivery_id: int | None
    state: str
    reason: str | None
    duplicate: bool


# --- contacts and lists -----------------------------------------------------------

class ContactIn(Body):
    """Upsert by address: an existing contact (any case or alphabet of the same address) is
    updated, else one is created. `lists` adds it to those lists."""

    email: str = Field(min_length=3, max_length=254)
    name: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=40)
    fields: dict[str, str] | None = Field(None, description="custom fields, by name")
    lists: list[IdInt] | None = Field(None, max_length=100)


class ContactPatch(Body):
    email: str | None = Field(None, min_length=3, max_length=254)
    name: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=40)
    fields: dict[str, str | None] | None = Field(None, description="null removes a field")


class ContactOut(BaseModel):
    id: int
    email: str | None
    name: str
    phone: str | None
    fields: dict[str, Any]
    lists: list[int]
    created_at: datetime


class ContactsQuery(Page):
    q: str = Field("", max_length=254)
    email: str | None = Field(None, max_length=254, description="exactly this address (any case)")


class ContactsOut(Paged):
    contacts: list[ContactOut]


class ContactStopOut(BaseModel):
    entry_id: int
    list_id: int
    list_name: str
    value: str


class ContactStopsOut(BaseModel):
    stoplists: list[ContactStopOut]


class ContactStopIn(Body):
    list_id: IdInt


class TimelineItemOut(BaseModel):
    issue_id: int
    subject: str
    issue_status: str
    state: str
    at: datetime | None
    reply: str | None
    why: str


class TimelineOut(BaseModel):
    deliveries: list[TimelineItemOut]
    stoplists: list[ContactStopOut]


class ListIn(Body):
    name: str = Field(min_length=1, max_length=200)


class ListOut(BaseModel):
    id: int
    name: str
    size: int
    created_at: datetime


class ListsOut(Paged):
    lists: list[ListOut]


class MembersIn(Body):
    emails: list[str] = Field(min_length=1, max_length=10_000)


class RejectedLine(BaseModel):
    line: int
    text: str
    reason: str


class MembersAddedOut(BaseModel):
    added: int
    new: int
    rejected: list[RejectedLine]


class MembersRemoveIn(Body):
    contact_ids: list[IdInt] = Field(min_length=1, max_length=10_000)


class RemovedOut(BaseModel):
    removed: int


class MembersOut(Paged):
    contacts: list[ContactOut]


class ImportForm(BaseModel):
    file: BaseFile


class ImportOut(BaseModel):
    id: int
    list_id: int
    filename: str
    state: Literal["queued", "running", "done", "failed"]
    percent: int
    imported: int
    updated: int
    skipped: int
    rejected_count: int
    rejected: list[RejectedLine] = Field(description="the first rejected lines, with their reasons")
    error: str | None
    created_at: datetime
    finished_at: datetime | None


# --- materials and templates ------------------------------------------------------

class MaterialIn(Body):
    section_id: IdInt | None = None
    title: str | None = Field(None, max_length=300)
    summary: str | None = Field(None, max_length=5000)
    body_html: str | None = Field(None, max_length=200_000, description="sanitised when saved")
    link: str | None = Field(None, max_length=2000)
    image_url: str | None = Field(None, max_length=2000)
    published_at: str | None = Field(None, max_length=40)


class MaterialOut(BaseModel):
    id: int
    section_id: int
    title: str
    summary: str
    body_html: str
    link: str
    image_url: str
    published_at: datetime | None


class MaterialsQuery(Page):
    q: str = Field("", max_length=200)
    section: int | None = Field(None, ge=1, le=2**31 - 1)


class MaterialsOut(Paged):
    materials: list[MaterialOut]


class SectionOut(BaseModel):
    id: int
    name: str


class SectionsOut(BaseModel):
    sections: list[SectionOut]


class SectionIn(Body):
    name: str = Field(min_length=1, max_length=100)


class TemplateOut(BaseModel):
    id: int
    name: str
    shipped: bool
    html: str


class TemplatesOut(BaseModel):
    templates: list[TemplateOut]


class TemplateCopyIn(Body):
    name: str = Field(min_length=1, max_length=100)


class TemplatePatch(Body):
    name: str | None = Field(None, min_length=1, max_length=100)
    html: str | None = Field(None, min_length=1, max_length=200_000)


# --- stop-lists, package, reports -------------------------------------------------

class StopListOut(BaseModel):
    id: int
    name: str
    code: str | None
    system: bool
    entries: int


class StopListsOut(BaseModel):
    stoplists: list[StopListOut]


class StopListIn(Body):
    name: str = Field(min_length=1, max_length=200)


class StopEntriesQuery(Page):
    q: str = Field("", max_length=254)


class StopEntryOut(BaseModel):
    id: int
    kind: str
    value: str
    in_contact_base: bool
    source: str
    created_at: datetime


class StopEntriesOut(Paged):
    entries: list[StopEntryOut]


class StopEntriesIn(Body):
    entries: list[str] = Field(max_length=100_000)


class StopAddedOut(BaseModel):
    added: int
    already: int
    rejected: list[RejectedLine]


class IdsIn(Body):
    ids: list[IdInt] = Field(max_length=100_000)


class PackageOut(BaseModel):
    unlimited: bool
    balance: int | None


class TopUpIn(Body):
    amount: StrictInt = Field(ge=1, le=1_000_000_000)


class ReportOut(BaseModel):
    outcome: Literal["applied", "quarantined", "duplicate"]
    kind: str | None
    reason: str | None
    delivery_id: int | None


# --- webhooks ---------------------------------------------------------------------

EventType = Literal["issue.status_changed", "recipient.sent", "recipient.bounced", "recipient.failed",
                    "recipient.complained", "recipient.unsubscribed", "recipient.stopped"]


class EndpointIn(Body):
    url: str = Field(min_length=1, max_length=2000, description="http(s), a public address")
    events: list[EventType] = Field(min_length=1, max_length=7)


class EndpointPatch(Body):
    url: str | None = Field(None, min_length=1, max_length=2000)
    events: list[EventType] | None = Field(None, min_length=1, max_length=7)
    enabled: StrictBool | None = None


class EndpointOut(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    consecutive_failures: int
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime


class EndpointMadeOut(EndpointOut):
    secret: str = Field(description="the signing secret: shown in this answer only")


class EndpointsOut(BaseModel):
    endpoints: list[EndpointOut]


class AttemptOut(BaseModel):
    id: int
    at: datetime
    event_count: int
    status_code: int | None
    response: str | None
    error: str | None
    duration_ms: int


class AttemptsOut(Paged):
    attempts: list[AttemptOut]
