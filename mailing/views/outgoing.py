"""Outgoing: the list of issues with live progress, the editor, the issue page and its actions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import get_locale, ngettext, to_user_timezone, to_utc
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from htmx_flask import request
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    DecimalField,
    EmailField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

from .. import chains, contacts, lifecycle, proofs, queueing, settings, states
from ..errors import BadParameter, error
from ..extensions import db
from ..models import ContactList, Issue, Sender
from ..sanitise import clean_html
from ..sending.letter import (
    TEMPLATE_FIELDS,
    check_letter,
    clean_header_value,
    template_fields,
)
from ..store import contacts as audience
from ..store import deliveries
from ..store import issues as issue_rows
from ..store import journal as journal_rows
from ..store import reports as late_reports
from .access import EDITORS, READERS, roles
from .humane import num, zone_name
from .params import arg_int, page_arg

bp = Blueprint("outgoing", __name__)

DEFAULT_BODY = (
    "<p>Hello, {{ name }}!</p>\n<p>Here is our news.</p>\n"
    '<p><small>Sent to {{ email }}. <a href="{{ unsubscribe_url }}">Unsubscribe</a></small></p>'
)


class IssueForm(FlaskForm):
    subject = StringField(_l("Subject"), validators=[DataRequired(), Length(max=300)])
    preheader = StringField(_l("Preheader (the line shown after the subject)"),
                            validators=[Optional(), Length(max=300)])
    sender_id = SelectField(_l("Sender"), coerce=int, validators=[DataRequired()])
    from_name = StringField(_l("From name (empty: the sender's)"), validators=[Optional(), Length(max=200)])
    reply_to = StringField(_l("Reply-To"), validators=[Optional(), Length(max=254)])
    list_id = SelectField(_l("Contact list"), coerce=int, validators=[DataRequired()])
    kind = RadioField(_l("Kind"), default="issue", choices=[
        SelectChoice("issue", _l("An issue: one send to the list")),
        SelectChoice("triggered", _l("A triggered mailing: one letter to each participant as they arrive"))])
    trigger_on_join = BooleanField(_l("Also send it to each contact who joins the list"))
    body_html = TextAreaField(_l("HTML body"), validators=[DataRequired(), Length(max=500_000)])
    body_text = TextAreaField(_l("Plain-text part (empty: made from the HTML)"),
                              validators=[Optional(), Length(max=500_000)])
    custom_headers = TextAreaField(_l("Extra headers (one Name: value a line)"),
                                   validators=[Optional(), Length(max=10_000)])
    spread = RadioField(_l("Spread over time"), default="none", choices=[
        SelectChoice("none", _l("Send all at once")),
        SelectChoice("portions", _l("Portions: N recipients every M minutes")),
        SelectChoice("hours", _l("Evenly over H hours"))])
    portion_size = IntegerField(_l("N recipients"), validators=[Optional(), NumberRange(min=1, max=10_000_000)])
    portion_minutes = DecimalField(_l("every M minutes"), places=2,
                                   validators=[Optional(), NumberRange(min=0.01, max=10_080)])
    spread_hours = DecimalField(_l("over H hours"), places=2, validators=[Optional(), NumberRange(min=0.01, max=720)])

    def load(self, issue: Issue) -> None:
        """Fill the spread fields from the issue (the form speaks minutes, the issue seconds)."""
        if issue.spread_hours:
            self.spread.data, self.spread_hours.data = "hours", issue.spread_hours
        elif issue.spread_size and issue.spread_interval:
            self.spread.data = "portions"
            self.portion_size.data = issue.spread_size
            self.portion_minutes.data = round(issue.spread_interval / 60, 2)

    def validate(self, extra_validators: Any = None) -> bool:
        """Field checks, then the placeholders of every letter field against the
        contact fields that exist: a typo such as {{ nmae }} is shown next to its field."""
        ok = super().validate(extra_validators)
        # The fields a spread mode needs. Checked here, not in validate_<field>: an empty
        # field's Optional() stops its chain before an inline validator would run.
        needed = {"portions": [(self.portion_size, _("Give the number of recipients per portion.")),
                               (self.portion_minutes, _("Give the minutes between portions."))],
                  "hours": [(self.spread_hours, _("Give the hours to spread over."))]}
        for f, message in needed.get(self.spread.data, []):
            if not f.data and not f.errors:
                f.errors = [*f.errors, message]
                ok = False
        values = {name: getattr(self, name).data or "" for name in TEMPLATE_FIELDS}
        known = contacts.known_fields()
        if self.kind.data == "triggered":  # each participant brings its own fields
            known += sorted(set().union(*(template_fields(v) for v in values.values())))
        for name, found in check_letter(values, known).items():
            getattr(self, name).errors = [*getattr(self, name).errors, *found]
            ok = False
        return ok

    def save(self, issue: Issue) -> None:
        issue.subject, issue.body_html = self.subject.data, clean_html(self.body_html.data)
        issue.preheader = clean_header_value(self.preheader.data or "")
        issue.from_name = clean_header_value(self.from_name.data or "")
        issue.reply_to = clean_header_value(self.reply_to.data or "")
        issue.body_text = self.body_text.data or ""
        issue.custom_headers = (self.custom_headers.data or "").strip()
        issue.sender_id, issue.list_id = self.sender_id.data, self.list_id.data
        issue.kind = "triggered" if self.kind.data == "triggered" else "issue"
        issue.trigger_on_join = issue.kind == "triggered" and bool(self.trigger_on_join.data)
        mode = self.spread.data
        issue.spread_size = self.portion_size.data if mode == "portions" else None
        issue.spread_interval = int(float(self.portion_minutes.data) * 60) if mode == "portions" else None
        issue.spread_hours = float(self.spread_hours.data) if mode == "hours" else None

    def fill_choices(self) -> None:
        self.sender_id.choices = [SelectChoice(s.id, f"{s.name} <{s.email}>") for s in
                                  db.session.scalars(sa.select(Sender).order_by(Sender.name))]
        self.list_id.choices = [SelectChoice(c.id, c.name) for c in
                                db.session.scalars(sa.select(ContactList).order_by(ContactList.name))]

    def validate_subject(self, field: StringField) -> None:
        field.data = clean_header_value(field.data or "")


class TestForm(FlaskForm):
    email = EmailField(_l("Address"), validators=[DataRequired(), Email(check_deliverability=False),
                                              Length(max=254)])
    contact = StringField(_l("As contact (empty: the address's own, else the list's first)"),
                          validators=[Optional(), Length(max=254)])


class LaunchForm(FlaskForm):
    mode = RadioField(_l("When"), choices=[SelectChoice("now", _l("Now")),
                                           SelectChoice("at", _l("At a date and time")),
                                           SelectChoice("postpone", _l("Postpone"))], default="now")
    send_at = DateTimeLocalField(_l("Send at"), format="%Y-%m-%dT%H:%M", validators=[Optional()])


class StepForm(FlaskForm):
    """A next step of the chain: to whom (of the previous step), and when."""

    audience = RadioField(_l("To"), default="all", choices=[
        SelectChoice("all", _l("the previous step's whole list")),
        SelectChoice("sent", _l("those the previous step was sent to")),
        SelectChoice("not_reached", _l("those the previous step did not reach"))])
    when = RadioField(_l("When"), default="delay", choices=[
        SelectChoice("delay", _l("hours after the previous step finishes")),
        SelectChoice("at", _l("at a date and time"))])
    delay_hours = DecimalField(_l("Hours"), places=2, default=24,
                               validators=[Optional(), NumberRange(min=0, max=366 * 24)])
    at = DateTimeLocalField(_l("Date and time"), format="%Y-%m-%dT%H:%M", validators=[Optional()])

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        # Here, not in validate_at: an empty field's Optional() stops its inline validator.
        if self.when.data == "at" and self.at.data is None and not self.at.errors:
            self.at.errors = [*self.at.errors, _("Give the date and time.")]
            ok = False
        return ok


class ResendForm(FlaskForm):
    audience = RadioField(_l("Send it again to"), choices=[
        SelectChoice("all", _l("the whole list again")),
        SelectChoice("not_reached", _l("only those it did not reach"))])


@bp.get("/")
@roles(*READERS)
def index() -> Any:
    status = request.args.get("status") or ""
    page = page_arg()
    if status and status not in issue_rows.OUTGOING_FILTERS:
        abort(404)
    q = (request.args.get("q") or "").strip()[:300]  # a subject's length
    sort = request.args.get("sort") or "created"
    if sort not in issue_rows.OUTGOING_SORTS:
        raise BadParameter("sort", _("Sort by creation, send time or status."))
    rows, has_next = issue_rows.outgoing_page(status, page, q, sort)
    return render_template("outgoing/index.html", issues=rows, status=status, page=page, q=q, sort=sort,
                           has_next=has_next, filters=issue_rows.OUTGOING_FILTERS)


@bp.get("/issues/<int:issue_id>/row")
@roles(*READERS)
def row(issue_id: int) -> Any:
    """The polled partial: one row, from the issue's own counters (never a scan of
    deliveries), rendered at most once a second for all the pages polling it."""
    variant = f"{get_locale()}:{'edit' if current_user.role in EDITORS else 'read'}:{zone_name()}"
    html = queueing.cached_row(issue_id, variant)
    if html is None:
        issue = db.session.get(Issue, issue_id,
                               options=[so.joinedload(Issue.sender), so.joinedload(Issue.contact_list)])
        if issue is None:
            abort(404)
        html = render_template("outgoing/_issue_row.html", issue=issue, progress=issue_rows.progress(issue))
        queueing.cache_row(issue_id, variant, html)
    return html


@bp.route("/issues/new", methods=["GET", "POST"])
@roles(*EDITORS)
def new() -> Any:
    size, minutes = settings.get("default_portion_size"), settings.get("default_portion_minutes")
    spread = {"spread": "portions", "portion_size": size, "portion_minutes": minutes} if size and minutes else {}
    form = IssueForm(body_html=DEFAULT_BODY, **spread)
    form.fill_choices()
    if form.validate_on_submit():
        issue = Issue(created_by_id=current_user.id)
        form.save(issue)
        db.session.add(issue)
        db.session.flush()
        states.record(issue.id, "created", actor=current_user)
        db.session.commit()
        return redirect(url_for("outgoing.show", issue_id=issue.id))
    return render_template("outgoing/edit.html", form=form, issue=None, known_fields=contacts.known_fields()), \
        400 if form.errors else 200


@bp.route("/issues/<int:issue_id>/edit", methods=["GET", "POST"])
@roles(*EDITORS)
def edit(issue_id: int) -> Any:
    issue = db.get_or_404(Issue, issue_id)
    locked = lifecycle.edit_lock_reason(issue)
    form = IssueForm(obj=issue)
    form.fill_choices()
    if request.method == "GET":
        form.load(issue)
    if request.method == "POST":
        if locked:
            return error(409, "locked", locked)
        if form.validate_on_submit():
            form.save(issue)
            states.record(issue.id, "edited", actor=current_user)
            db.session.commit()
            flash(_("Saved."))
            return redirect(url_for("outgoing.show", issue_id=issue.id))
    return render_template("outgoing/edit.html", form=form, issue=issue, locked=locked,
                           known_fields=contacts.known_fields()), \
        400 if form.errors else 200


@bp.get("/issues/<int:issue_id>")
@roles(*READERS)
def show(issue_id: int) -> Any:
    return _issue_page(issue_id)


def _issue_page(issue_id: int, launch_form: LaunchForm | None = None, status: int = 200,
                step_form: StepForm | None = None) -> Any:
    """The issue page; `launch_form` carries a refused launch's errors beside its fields."""
    issue = db.get_or_404(Issue, issue_id)
    tab = request.args.get("tab", "details")
    if launch_form is None and issue.status == "draft" and issue.send_at:  # a copy's send time
        launch_form = LaunchForm(mode="at", send_at=local_picker_value(issue.send_at))
    ctx: dict[str, Any] = {"issue": issue, "tab": tab, "progress": issue_rows.progress(issue),
                           "test_form": TestForm(), "launch_form": launch_form or LaunchForm(),
                           "locked": lifecycle.edit_lock_reason(issue),
                           "chain": chains.steps(issue) if issue.chain_root_id else [],
                           "step_form": step_form or StepForm()}
    if tab == "details":
        ctx["journal"] = journal_rows.issue_journal(issue.id)
        if issue.status in ("draft", "scheduled"):
            ctx["preview_audience"] = audience.audience_preview(issue)
    elif tab == "responses":
        ctx["groups"] = deliveries.reply_groups(issue.id)
        code = arg_int("code", minimum=0, maximum=999)  # an SMTP reply code
        q = (request.args.get("q") or "").strip()[:254]
        page = page_arg()
        if code is not None or q:
            ctx["recipients"], ctx["has_next"] = deliveries.reply_recipients(
                issue.id, code=code, enhanced=request.args.get("enhanced") or None, q=q, page=page)
        ctx.update(code=code, enhanced=request.args.get("enhanced") or "", q=q, page=page)
        ctx["late"] = late_reports.late_groups(issue.id)
    elif tab == "report":
        ctx["by_state"] = deliveries.delivery_states(issue.id)
        # Minutes come back as UTC text; as moments they are shown in the reader's zone.
        ctx["per_minute"] = [(datetime.strptime(m, "%Y-%m-%d %H:%M"), n)
                             for m, n in deliveries.sent_per_minute(issue.id)]
        ctx["domains"] = deliveries.top_domains(issue.id)
        ctx["reasons"] = deliveries.refusal_reasons(issue.id)
        ctx["over_time"] = late_reports.over_time(issue.id)
    else:
        abort(404)
    return render_template("outgoing/show.html", **ctx), status


@bp.get("/issues/<int:issue_id>/preview")
@roles(*READERS)
def preview(issue_id: int) -> Any:
    """The letter as a sample recipient sees it, shown in a sandboxed iframe."""
    proof = proofs.preview(db.get_or_404(Issue, issue_id), request.args.get("as") or "")
    resp = current_app.response_class(proof.html, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src * data:; style-src 'unsafe-inline'"
    return resp


@bp.post("/issues/<int:issue_id>/test")
@roles(*EDITORS)
def test_letter(issue_id: int) -> Any:
    """One letter to one address, now, through the configured relay."""
    issue = db.get_or_404(Issue, issue_id)
    form = TestForm()
    if not form.validate_on_submit():
        return render_template("outgoing/_test_result.html", form=form, ok=False), 400
    try:
        result = proofs.send_test(issue, form.email.data.strip(), form.contact.data or "", current_user)
    except proofs.TestFailed as exc:
        return render_template("outgoing/_test_result.html", form=form, ok=False, message=exc.message), 502
    return render_template("outgoing/_test_result.html", form=form, ok=result.ok, message=result.reply)


@bp.post("/issues/<int:issue_id>/launch")
@roles(*EDITORS)
def launch(issue_id: int) -> Any:
    issue = db.get_or_404(Issue, issue_id)
    form = LaunchForm()
    if not form.validate_on_submit():
        return _issue_page(issue.id, form, 400)  # the errors beside "When" and "Send at"
    at: datetime | None = None
    if form.mode.data == "at":
        if form.send_at.data is None:
            form.send_at.errors.append(_("Give the date and time to send at."))
            return _issue_page(issue.id, form, 400)
        at = to_utc(form.send_at.data)  # typed in the user's zone; stored as UTC
    try:
        lifecycle.launch(issue.id, current_user, at=at, postpone=form.mode.data == "postpone")
    except lifecycle.LaunchError as exc:
        if exc.field not in ("mode", "send_at", "package"):
            raise  # not about this form's fields: answered as every refused launch (mailing/errors.py)
        getattr(form, "mode" if exc.field == "package" else exc.field).errors.append(exc.message)
        return _issue_page(issue.id, form, 400)
    db.session.expire_all()
    launched = db.session.get(Issue, issue.id)
    if launched is not None:
        flash(_launch_message(launched))
    return redirect(url_for("outgoing.index"))


def local_picker_value(moment: datetime | None) -> datetime | None:
    """A stored UTC moment as a date picker shows it: in the user's zone, without a zone."""
    return to_user_timezone(moment).replace(tzinfo=None) if moment else None


def _launch_message(issue: Issue) -> str:
    """What became of a launch, said in the status region of the page it lands on."""
    n = issue.sendable
    if issue.status == "moderation":
        return _("“%(title)s” waits for a moderator: %(reason)s", title=issue.subject,
                 reason=issue.status_reason or "")
    if issue.status == "scheduled" and issue.send_at:
        return ngettext("“%(title)s” is scheduled for %(count)s recipient.",
                        "“%(title)s” is scheduled for %(count)s recipients.", n, title=issue.subject, count=num(n))
    if issue.status == "scheduled":
        return _("“%(title)s” is formed and waits until you send it.", title=issue.subject)
    return ngettext("“%(title)s” is launched to %(count)s recipient.",
                    "“%(title)s” is launched to %(count)s recipients.", n, title=issue.subject, count=num(n))


@bp.post("/issues/<int:issue_id>/actions/<action>")
@roles(*EDITORS)
def act(issue_id: int, action: str) -> Any:
    """Pause, resume, send whole, cancel, send now: the dropdown's and the page's buttons."""
    handlers = {"pause": lifecycle.pause, "resume": lifecycle.resume,
                "send_whole": lifecycle.send_whole, "cancel": lifecycle.cancel,
                "send_now": lifecycle.send_now}
    if action not in handlers:
        abort(404)
    issue = db.get_or_404(Issue, issue_id)
    if action == "resume":  # after a rate interrupt an admin says why (the menu's prompt)
        comment = request.headers.get("HX-Prompt") or request.form.get("comment", "")
        lifecycle.resume(issue.id, current_user, comment=comment)
    else:
        handlers[action](issue.id, current_user)  # a refusal is answered by mailing/errors.py
    db.session.expire_all()
    issue = db.session.get(Issue, issue_id)
    message = _action_message(action, issue)
    if request.htmx:
        html = render_template("outgoing/_issue_row.html", issue=issue, progress=issue_rows.progress(issue))
        # The page's status region says what happened (static/app.js); JSON keeps the header ASCII.
        return html, 200, {"HX-Trigger": json.dumps({"outbox:status": message})}
    flash(message)
    return redirect(request.referrer or url_for("outgoing.index"))


def _action_message(action: str, issue: Issue) -> str:
    """The sentence the status region reads after an action."""
    title = issue.subject
    if action == "pause":
        return _("“%(title)s” is paused at %(pct)s %%; nothing more leaves until it is resumed.",
                 title=title, pct=issue.percent)
    if action == "resume":
        return _("“%(title)s” is sending again.", title=title)
    if action == "send_whole":
        return _("“%(title)s”: everything left goes now.", title=title)
    if action == "cancel":
        return _("“%(title)s” is cancelled; those not yet sent will not get it.", title=title)
    return _("“%(title)s” goes out now.", title=title)


# --- around the send: copy, resend, delete, chain steps (mailing/chains.py) -----------

@bp.post("/issues/<int:issue_id>/copy")
@roles(*EDITORS)
def copy(issue_id: int) -> Any:
    """A Draft copy, opened in the editor (htmx follows HX-Redirect)."""
    db.get_or_404(Issue, issue_id)
    new_id = chains.copy(issue_id, current_user)
    flash(_("Copied into a new draft."))
    target = url_for("outgoing.edit", issue_id=new_id)
    if request.htmx:
        return "", 204, {"HX-Redirect": target}
    return redirect(target)


@bp.route("/issues/<int:issue_id>/resend", methods=["GET", "POST"])
@roles(*EDITORS)
def resend(issue_id: int) -> Any:
    """The resend dialog: both audiences with their counts, then a linked issue launched now."""
    issue = db.get_or_404(Issue, issue_id)
    if not states.allowed("resend", issue.status):
        raise states.IllegalTransition("resend", issue.status, states.refusal("resend", issue.status))
    counts = chains.resend_counts(issue.id)
    form = ResendForm()
    if form.validate_on_submit():
        try:
            new_id = chains.resend(issue.id, current_user, form.audience.data)
        except chains.ChainError as exc:
            form.audience.errors.append(exc.message)
        else:
            lifecycle.launch(new_id, current_user)
            flash(_("Sent again as issue #%(id)s.", id=new_id))
            return redirect(url_for("outgoing.index"))
    return render_template("outgoing/resend.html", issue=issue, form=form, counts=counts),         400 if form.errors else 200


@bp.route("/issues/<int:issue_id>/delete", methods=["GET", "POST"])
@roles(*EDITORS)
def delete(issue_id: int) -> Any:
    """Delete a draft and its chain's later steps, after a confirmation that names them."""
    issue = db.get_or_404(Issue, issue_id)
    if request.method == "POST":  # CSRFProtect has checked the token
        ids = chains.delete(issue.id, current_user)
        flash(_("Deleted: %(ids)s.", ids=", ".join(f"#{i}" for i in ids)))
        return redirect(url_for("outgoing.index"))
    if not states.allowed("delete", issue.status):
        raise states.IllegalTransition("delete", issue.status, states.refusal("delete", issue.status))
    return render_template("outgoing/delete.html", issue=issue, later=chains.later_steps(issue))


@bp.post("/issues/<int:issue_id>/steps")
@roles(*EDITORS)
def add_step(issue_id: int) -> Any:
    issue = db.get_or_404(Issue, issue_id)
    form = StepForm()
    if not form.validate_on_submit():
        return _issue_page(issue.id, status=400, step_form=form)
    at = to_utc(form.at.data) if form.when.data == "at" and form.at.data else None  # the user's zone → UTC
    delay = None if at else int(float(form.delay_hours.data or 0) * 3600)
    try:
        step_id = chains.add_step(issue.id, current_user, audience=form.audience.data,
                                  delay_seconds=delay, at=at)
    except chains.ChainError as exc:
        getattr(form, {"delay_seconds": "delay_hours"}.get(exc.field, exc.field), form.audience).errors \
            .append(exc.message)
        return _issue_page(issue.id, status=400, step_form=form)
    flash(_("Step added; edit its letter."))
    return redirect(url_for("outgoing.show", issue_id=step_id))


@bp.get("/journal")
@roles(*READERS)
def journal() -> Any:
    page = page_arg()
    # Text filters are capped like every search box (254, an address's length): SQLite
    # refuses a LIKE pattern over 50,000 characters with an error, not an empty page.
    filters = {k: (request.args.get(k) or "")[:254] or None for k in ("issue", "actor", "event")}
    errors: dict[str, str] = {}
    try:
        issue = arg_int("issue")
    except BadParameter as exc:  # shown next to the filter field, not as a bare error page
        issue, errors["issue"] = None, exc.message
    events, has_next = ([], False) if errors else journal_rows.journal_page(
        page=page, issue=issue, actor=filters["actor"], event=filters["event"])
    return render_template("outgoing/journal.html", events=events, page=page, has_next=has_next,
                           filters=filters, errors=errors,
                           event_types=journal_rows.journal_event_types()), 400 if errors else 200

