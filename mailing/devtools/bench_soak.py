"""`flask bench soak --minutes N`: everything a busy team does, at once, against the real
stack (gunicorn web, `flask worker` processes, Redis, an SMTP sink) for N minutes.

Browsers poll the Outgoing page, the live row, the issue page and the journal; an editor
launches issue after issue and pauses and resumes the one that is sending; another pastes
into a stop-list every few seconds; another uploads a contact CSV every 15 s and follows
its progress bar. The last line is one JSON object: errors (5xx answers, connection
errors, failed jobs and imports, interrupted issues, tracebacks in the processes' logs;
all must be 0), p50/p95 latency per kind of request, and the resident memory of every
long-lived process at the end of the warm-up and at the end of the run.

Like the other benchmarks it builds a throw-away database (SQLite, or an empty one named
by --database postgresql), Redis, sink and workers in a temp directory, and cleans up.
"""

from __future__ import annotations

import http.client
import multiprocessing
import random
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import click
import psutil
import sqlalchemy as sa

from .bench import ROOT, Stack, _free_port, _sink_binary, emit, seed_issue
from .launcher import alive, descendants, stop_tree, web_command

FLAT_MB, FLAT_PCT = 5.0, 5.0  # growth under either counts as flat
LAUNCH_EVERY = 10.0  # seconds between launches at most
EDITOR = ("soak-editor@outbox.local", "soak-editor-password")
READER = ("soak-support@outbox.local", "soak-support-password")
_CSRF = (re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"'),
         re.compile(r'name="csrf_token" value="([^"]+)"'),
         re.compile(r'"X-CSRFToken": "([^"]+)"'))


class _Client:
    """One signed-in browser: its own cookies, a new connection per request (gunicorn's
    sync workers close each one), every answer timed and classified."""

    def __init__(self, base: str, account: tuple[str, str], record: Any):
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.cookies: dict[str, str] = {}
        self.record = record
        status, page, _ = self.request("GET", "/login", kind=None)
        status, _page, _ = self.request("POST", "/login", kind=None, form={
            "email": account[0], "password": account[1], "csrf_token": self._csrf(page)})
        if status != 302:
            raise RuntimeError(f"login as {account[0]} answered {status}")
        self.csrf = self._csrf(self.request("GET", "/", kind=None)[1])

    @staticmethod
    def _csrf(page: str) -> str:
        for pattern in _CSRF:
            m = pattern.search(page)
            if m:
                return m.group(1)
        raise RuntimeError("no CSRF token on the page")

    def request(self, method: str, path: str, kind: str | None, form: dict[str, str] | None = None,
                upload: tuple[str, str, bytes] | None = None, htmx: bool = False) -> tuple[int, str, str]:
        """(status, body, Location); status 0 for a connection error. `kind` names the
        latency bucket (None: not measured)."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body: bytes | None = None
        if htmx:
            headers.update({"HX-Request": "true", "X-CSRFToken": getattr(self, "csrf", "")})
        if upload is not None:
            boundary = uuid.uuid4().hex
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                     for k, v in (form or {}).items()]
            field, filename, data = upload
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                         f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'.encode() + data + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            status, location = resp.status, resp.getheader("Location") or ""
            for cookie in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = cookie.partition("=")
                value = rest.split(";", 1)[0]
                if value and "max-age=0" not in cookie.lower():
                    self.cookies[name.strip()] = value
                else:
                    self.cookies.pop(name.strip(), None)
        except (OSError, http.client.HTTPException) as exc:
            status, text, location = 0, f"{type(exc).__name__}: {exc}", ""
        finally:
            conn.close()
        if kind is not None:
            self.record(kind, status, (time.perf_counter() - started) * 1000, f"{method} {path}: {text[:200]}")
        return status, text, location


class _Recorder:
    """Per-process results: latencies by kind (after the warm-up), and every 4xx/5xx and
    connection error whenever it happens."""

    def __init__(self, warm_until: float):
        self.warm_until = warm_until
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.client_4xx: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, status: int, ms: float, what: str) -> None:
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if status == 0 or status >= 500:
                self.errors.append(f"{status or 'connection error'} {what}")
            elif status >= 400:
                self.client_4xx[f"{kind} {status}"] = self.client_4xx.get(f"{kind} {status}", 0) + 1
            if time.time() >= self.warm_until and 0 < status < 500:
                self.latency.setdefault(kind, []).append(ms)


def _poller(base: str, i: int, rec: _Recorder, stop_at: float, live: Any, pages: int) -> None:
    """A dashboard open in a browser: one request a second, as its page polls."""
    c = _Client(base, READER, rec)
    time.sleep(random.random())  # browsers are not in step
    n = 0
    while time.time() < stop_at:
        t = time.time()
        if i % 10 == 0:
            c.request("GET", f"/?page={1 + n % pages}", "outgoing")
        elif i % 10 == 5:
            c.request("GET", f"/issues/{live.value}", "issue_page")
        elif i % 10 == 9:
            c.request("GET", f"/journal?page={1 + n % 3}", "journal")
        else:
            c.request("GET", f"/issues/{live.value}/row", "row", htmx=True)
        n += 1
        time.sleep(max(0.0, 1.0 - (time.time() - t)))


def _editor(base: str, rec: _Recorder, stop_at: float, live: Any, issue_ids: list[int], stats: dict) -> None:
    """Launch the next issue when the last one is sent (at most one every LAUNCH_EVERY
    seconds); pause and resume it every few seconds while it sends."""
    c = _Client(base, EDITOR, rec)
    status_re = re.compile(r'data-status="([a-z]+)"')
    queue = list(issue_ids)
    current: int | None = None
    last_pause = launched_at = 0.0
    while time.time() < stop_at:
        if current is None:
            if not queue:
                break
            if time.time() - launched_at < LAUNCH_EVERY:  # paced, so the drafts last the run
                time.sleep(0.5)
                continue
            current, launched_at = queue.pop(0), time.time()
            code, _, _ = c.request("POST", f"/issues/{current}/launch", "launch",
                                   form={"mode": "now", "csrf_token": c.csrf})
            stats["launched"] += code == 302
            live.value = current
        time.sleep(0.5)
        code, row, _ = c.request("GET", f"/issues/{current}/row", "row", htmx=True)
        m = status_re.search(row)
        status = m.group(1) if m else ""
        if status in ("sent", "cancelled", "interrupted", "draft", "moderation"):
            stats[status] = stats.get(status, 0) + 1
            current = None
            continue
        if status == "sending" and time.time() - last_pause >= 3.0:
            code, _, _ = c.request("POST", f"/issues/{current}/actions/pause", "action", htmx=True)
            stats["paused"] += code == 200
            time.sleep(1.0)
            code, _, _ = c.request("POST", f"/issues/{current}/actions/resume", "action", htmx=True)
            stats["resumed"] += code == 200
            last_pause = time.time()
    if current is not None:  # leave nothing paused behind
        c.request("POST", f"/issues/{current}/actions/resume", "action", htmx=True)


def _paster(base: str, rec: _Recorder, stop_at: float, stop_list: int, contacts: int, stats: dict) -> None:
    """Every 5 s, 200 lines into Blocked manually: new addresses, a few of the audience's,
    phone numbers and some rubbish (refused lines are part of the answer, not errors)."""
    c = _Client(base, EDITOR, rec)
    n = 0
    while time.time() < stop_at:
        t = time.time()
        lines = [f"soak{n}-{j}@blocked.test" for j in range(180)]
        lines += [f"r{random.randrange(contacts):07d}@bench.test" for _ in range(5)]
        lines += [f"+7 912 {n % 1000:03d}-{j:02d}-{(n + j) % 97:02d}" for j in range(10)]
        lines += ["not an address"] * 5
        code, _, _ = c.request("POST", f"/stoplists/{stop_list}/add", "paste", form={
            "items": "\n".join(lines), "confirm": "y", "csrf_token": c.csrf})
        stats["pastes"] += code == 200
        n += 1
        time.sleep(max(0.0, 5.0 - (time.time() - t)))


def _importer(base: str, rec: _Recorder, stop_at: float, list_id: int, rows: int, stats: dict) -> None:
    """Every 15 s a CSV of `rows` new contacts, followed on its progress bar until done."""
    c = _Client(base, EDITOR, rec)
    state_re = re.compile(r'data-state="([a-z_]+)"')
    n = 0
    while time.time() < stop_at:
        t = time.time()
        csv = "email,name,phone,city\n" + "".join(
            f"imp{n}-{j}@Soak.example,Reader {j},+7913{(n * rows + j) % 10_000_000:07d},City {j % 50}\n"
            for j in range(rows))
        code, _, location = c.request("POST", f"/lists/{list_id}/import", "import_upload",
                                      form={"csrf_token": c.csrf}, upload=("file", f"soak{n}.csv", csv.encode()))
        n += 1
        if code == 302 and "/imports/" in location:
            stats["imports"] += 1
            path = urllib.parse.urlsplit(location).path
            while time.time() < stop_at + 60:
                _, page, _ = c.request("GET", path, "import_progress", htmx=True)
                m = state_re.search(page)
                if not m or m.group(1) not in ("queued", "running"):
                    break
                time.sleep(1.0)
        time.sleep(max(0.0, 15.0 - (time.time() - t)))


def _group(base: str, roles: list[tuple], warm_until: float, stop_at: float, live: Any, barrier: Any,
           results: Any) -> None:
    """One client process: its roles in threads; its results go back through `results`."""
    rec = _Recorder(warm_until)
    stats: dict[str, int] = {"launched": 0, "paused": 0, "resumed": 0, "pastes": 0, "imports": 0}
    barrier.wait(timeout=600)

    def run(role: tuple) -> None:
        name, a, b = role
        try:
            if name == "poller":
                _poller(base, a, rec, stop_at, live, b)
            elif name == "editor":
                _editor(base, rec, stop_at, live, a, stats)
            elif name == "paster":
                _paster(base, rec, stop_at, a, b, stats)
            else:
                _importer(base, rec, stop_at, a, b, stats)
        except Exception as exc:  # a client that breaks is an error of the run, not a crash of it
            rec.errors.append(f"{name} client failed: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(role,)) for role in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({"latency": rec.latency, "errors": rec.errors, "client_4xx": rec.client_4xx,
                 "counts": rec.counts, "stats": stats})


def _rss_mb(proc: psutil.Process) -> float | None:
    """Resident memory now; None once the process has ended (or its pid is another's)."""
    try:
        return proc.memory_info().rss / 2**20 if alive(proc) else None
    except psutil.NoSuchProcess:
        return None


def _processes(named: dict[str, int]) -> dict[str, psutil.Process]:
    """Every long-lived process by name: each given one and what runs below it (gunicorn's
    workers, a worker's maintenance and scheduler processes; job processes come and go,
    and only those alive at both samples are compared)."""
    out: dict[str, psutil.Process] = {}
    for name, pid in named.items():
        try:
            out[name] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for child in sorted(descendants(pid), key=lambda c: c.pid):
            out[f"{name}/{child.pid}"] = child
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[max(int(len(xs) * q) - 1, 0)], 1) if xs else 0.0


def _log_errors(path: Path) -> list[str]:
    """Each traceback in a process's log, by its last line (the exception), and error lines."""
    found: list[str] = []
    in_traceback = False
    for line in (path.read_text(errors="replace") if path.exists() else "").splitlines():
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "\t")) \
                and not line.startswith(("During handling", "The above exception")):
            found.append(line[:300])
            in_traceback = False
        elif not in_traceback and (" ERROR " in line or "[ERROR]" in line):
            found.append(line[:300])
    return found


@click.command("soak")
@click.option("--minutes", default=10.0, type=float)
@click.option("--pollers", default=20, type=int, help="browsers polling the dashboard, one request a second each")
@click.option("--contacts", default=5_000, type=int, help="recipients of each issue")
@click.option("--import-rows", default=2_000, type=int, help="contacts per CSV import")
@click.option("--warmup", default=None, type=float,
              help="seconds before latencies count and memory is first sampled (default: a fifth of the run, at most 60)")
def soak(minutes: float, pollers: int, contacts: int, import_rows: int, warmup: float | None) -> None:
    """Pollers, pause/resume, stop-list pastes, contact imports and sends together for N minutes."""
    duration = minutes * 60
    warmup = min(60.0, duration / 5) if warmup is None else warmup
    sink_kind = "smtp-sink" if _sink_binary() else "aiosmtpd"
    stack = Stack(sink_kind, {"SEND_CONCURRENCY": "4", "SEND_JOBS": "2", "LEASE_SECONDS": "20"})
    web = None
    logs = stack.dir / "logs"
    logs.mkdir()
    try:
        n_issues = int(duration / LAUNCH_EVERY) + 3  # more than the editor can launch
        with stack.app_context():
            from mailing.cli import create_user
            from mailing.extensions import db
            from mailing.models import ContactList, Issue, StopList

            first = seed_issue(contacts)  # moves PostgreSQL's id sequence past its contacts
            template = db.session.get(Issue, first)
            assert template is not None
            db.session.add_all([Issue(subject=f"Soak issue {k}", body_html=template.body_html,
                                      sender_id=template.sender_id, list_id=template.list_id)
                                for k in range(1, n_issues)])
            imports_list = ContactList(name="soak imports")
            db.session.add(imports_list)
            create_user(EDITOR[0], "editor", EDITOR[1])
            create_user(READER[0], "support", READER[1])
            db.session.commit()
            issue_ids = list(db.session.scalars(sa.select(Issue.id).order_by(Issue.id)))
            blocked = db.session.scalar(sa.select(StopList.id).where(StopList.code == "blocked"))
            list_id = imports_list.id
            db.session.commit()
        workers = []
        for i in range(2):
            log = open(logs / f"worker-{i}.log", "wb")  # noqa: SIM115 (the process keeps it)
            workers.append(subprocess.Popen([sys.executable, "-m", "flask", "worker"], cwd=ROOT, env=stack.env,
                                            start_new_session=True, stdout=log, stderr=log))
        stack.workers.extend(workers)
        port = _free_port()
        web_log = open(logs / "web.log", "wb")  # noqa: SIM115
        web = subprocess.Popen(web_command(port), cwd=ROOT, env=stack.env, start_new_session=True,
                               stdout=web_log, stderr=web_log)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/login")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.time() > deadline:
                    raise click.ClickException("the web server did not answer within 60 s") from None
                time.sleep(0.2)

        ctx = multiprocessing.get_context("fork")
        live = ctx.Value("i", issue_ids[0])
        roles: list[list[tuple]] = [[] for _ in range(max(1, min(pollers, 4)))]
        for i in range(pollers):
            roles[i % len(roles)].append(("poller", i, max(1, n_issues // 50)))
        writers = [("editor", issue_ids, None), ("paster", blocked, contacts), ("importer", list_id, import_rows)]
        roles.append(writers)
        barrier, results = ctx.Barrier(len(roles) + 1), ctx.Queue()
        start = time.time()
        warm_until, stop_at = start + 5 + warmup, start + 5 + duration  # 5 s to sign everyone in
        procs = [ctx.Process(target=_group, args=(base, group, warm_until, stop_at, live, barrier, results))
                 for group in roles]
        for p in procs:
            p.start()
        barrier.wait(timeout=600)

        named = {"web": web.pid, **{f"worker-{i}": w.pid for i, w in enumerate(workers)},
                 "redis": stack.redis_proc.pid}
        if stack.sink is not None and stack.sink.kind == "smtp-sink":
            named["sink"] = stack.sink.proc.pid
        time.sleep(max(0.0, warm_until - time.time()))
        at_start = {name: (proc, _rss_mb(proc)) for name, proc in _processes(named).items()}
        peak: dict[str, float] = {}
        while time.time() < stop_at:
            for name, (proc, _mb) in at_start.items():
                mb = _rss_mb(proc)
                if mb is not None:
                    peak[name] = max(peak.get(name, 0.0), mb)
            time.sleep(min(5.0, max(0.0, stop_at - time.time())))
        at_end = {name: _rss_mb(proc) for name, (proc, _mb) in at_start.items()}

        merged: dict[str, Any] = {"latency": {}, "errors": [], "client_4xx": {}, "counts": {}, "stats": {}}
        for _ in procs:
            got = results.get(timeout=300)
            for kind, xs in got["latency"].items():
                merged["latency"].setdefault(kind, []).extend(xs)
            merged["errors"].extend(got["errors"])
            for key in ("client_4xx", "counts", "stats"):
                for k, v in got[key].items():
                    merged[key][k] = merged[key].get(k, 0) + v
        for p in procs:
            p.join(30)

        with stack.app_context():
            from mailing.extensions import db
            from mailing.models import ContactImport, Issue
            from mailing.queueing import queue

            # Imports still running finish before they are judged.
            until = time.time() + 120
            while time.time() < until and db.session.scalar(sa.select(sa.func.count()).select_from(
                    ContactImport).where(ContactImport.state.in_(["queued", "running"]))):
                db.session.commit()
                time.sleep(1)
            imports = dict(db.session.execute(sa.select(ContactImport.state, sa.func.count())
                                              .group_by(ContactImport.state)).all())
            statuses = dict(db.session.execute(sa.select(Issue.status, sa.func.count())
                                               .group_by(Issue.status)).all())
            db.session.commit()
            failed = queue().failed_job_registry
            failed_jobs = failed.count
            failed_samples = []
            for job_id in failed.get_job_ids()[:3]:
                job = failed.job_class.fetch(job_id, connection=failed.connection)
                failed_samples.append(f"{job.func_name}: {(job.exc_info or '').strip().splitlines()[-1:]}")
        log_errors = {name: found for name in ("worker-0", "worker-1", "web")
                      if (found := _log_errors(logs / f"{name}.log"))}

        memory = []
        for name, (proc, start_mb) in sorted(at_start.items()):
            end_mb = at_end.get(name)
            if start_mb is None or end_mb is None:
                continue  # a job process that came and went
            growth = end_mb - start_mb
            memory.append({"process": name, "pid": proc.pid, "start_mb": round(start_mb, 1), "end_mb": round(end_mb, 1),
                           "peak_mb": round(peak.get(name, end_mb), 1), "growth_mb": round(growth, 1),
                           "growth_pct": round(100 * growth / start_mb, 1) if start_mb else 0.0,
                           "flat": growth <= FLAT_MB or growth <= start_mb * FLAT_PCT / 100})
        # An import still queued or running when the clock stops is work in progress, not
        # an error; it is reported as unfinished.
        bad_imports = imports.get("failed", 0)
        unfinished_imports = sum(n for state, n in imports.items() if state in ("queued", "running"))
        errors = (len(merged["errors"]) + failed_jobs + bad_imports + statuses.get("interrupted", 0)
                  + sum(len(v) for v in log_errors.values()))
        emit({
            "minutes": minutes, "pollers": pollers, "database": stack.database,
            "errors": errors,
            "error_samples": merged["errors"][:10], "unfinished_imports": unfinished_imports,
            "failed_jobs": failed_jobs, "failed_job_samples": failed_samples,
            "log_errors": {name: found[:5] for name, found in log_errors.items()},
            "imports": imports, "issues": statuses, "letters": stack.sink.received if stack.sink else 0,
            "actions": merged["stats"], "requests": merged["counts"], "answers_4xx": merged["client_4xx"],
            "p95_ms": {k: _pct(v, 0.95) for k, v in sorted(merged["latency"].items())},
            "p50_ms": {k: _pct(v, 0.5) for k, v in sorted(merged["latency"].items())},
            "memory_flat": all(m["flat"] for m in memory), "memory": memory,
        })
    finally:
        if web is not None:
            stop_tree(web, 10)
        stack.close()

