"""`flask bench …`: benchmarks that build their own throw-away database, Redis, SMTP sink
and workers, clean up, and print one JSON object as their last line."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import click
import redis
import sqlalchemy as sa
from flask.cli import AppGroup

from . import bench_dkim
from .launcher import descendants, signal_tree, stop_tree, web_command

ROOT = Path(__file__).resolve().parents[2]  # the checkout: flask and gunicorn find app.py there
# The database the next Stack uses, set by every command's --database option.
_choice = {"database": "sqlite"}


class BenchGroup(AppGroup):
    """Every benchmark takes `--database sqlite|postgresql`: the same figure on both."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(click.Option(
            ["--database"], type=click.Choice(["sqlite", "postgresql"]), default="sqlite", show_default=True,
            help="postgresql: a throw-away cluster (or a fresh database on BENCH_DATABASE_URL's server)"))
        inner = cmd.callback
        assert inner is not None

        @functools.wraps(inner)
        def callback(*args: Any, database: str, **kwargs: Any) -> Any:
            _choice["database"] = database
            return inner(*args, **kwargs)

        cmd.callback = callback
        super().add_command(cmd, name)


bench = BenchGroup("bench", help="Benchmarks; each prints one JSON object as its last line.")

BODY = (
    "<html><body><h1>Hello, {{ name }}!</h1>"
    + "<p>This month at Outbox: faster sending, a pause that really stops, and a resume that "
      "never repeats anyone. Read on for the details of every change we made for you.</p>" * 14
    + '<p>Sent to {{ email }}. <a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sink_binary() -> str | None:
    return shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)


def _peak_rss_kb(pid: int | str) -> int:
    """The process's peak resident memory (Linux's VmHWM, which psutil does not report;
    /proc/self/clear_refs resets it), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


class Sink:
    """postfix's smtp-sink (counts only) or an aiosmtpd sink (counts per recipient)."""

    def __init__(self, kind: str, throttle: tuple[str, int] | None = None):
        """`throttle` (aiosmtpd only): (domain, letters per second) past which that
        domain's recipients get 421 4.7.0, as a mailbox provider defers a fast sender."""
        self.port = _free_port()
        self.kind = kind
        self.deferred = 0
        self.per_rcpt: Counter[str] = Counter()
        self.per_rcpt_order: list[str] = []  # aiosmtpd: each letter's recipient, in step with `times`
        self.times: list[float] = []
        self._count = 0
        self._lock = threading.Lock()
        if kind == "smtp-sink":
            binary = _sink_binary()
            if binary is None:
                raise click.ClickException("smtp-sink is not installed (apt-get install postfix)")
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            self.proc = subprocess.Popen([binary, "-c", *user, f"127.0.0.1:{self.port}", "1024"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            threading.Thread(target=self._read_counts, daemon=True).start()
        else:
            from aiosmtpd.controller import Controller

            sink = self
            accepted: list[float] = []  # the throttled domain's acceptances in the last second

            class Handler:
                async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
                    if throttle is not None and address.endswith("@" + throttle[0]):
                        now = time.time()
                        while accepted and accepted[0] < now - 1:
                            accepted.pop(0)
                        if len(accepted) >= throttle[1]:
                            sink.deferred += 1
                            return "421 4.7.0 Try again later: too many messages, slow down"
                        accepted.append(now)
                    envelope.rcpt_tos.append(address)
                    return "250 2.1.5 OK"

                async def handle_DATA(self, server, session, envelope):  # noqa: N802
                    now = time.time()
                    with sink._lock:
                        for r in envelope.rcpt_tos:
                            sink.per_rcpt[r] += 1
                            sink.per_rcpt_order.append(r)
                            sink.times.append(now)
                    return "250 2.0.0 Ok"

            self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, decode_data=False)
            self.controller.start()
        time.sleep(0.3)

    def _read_counts(self) -> None:
        """smtp-sink rewrites one counter line per message; reading it in batches keeps
        this process from competing with the senders for the CPU."""
        buf = b""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            buf = (buf + chunk)[-4096:]
            found = re.findall(rb"mesg=(\d+)", buf[-200:])
            if found:
                with self._lock:
                    self._count = int(found[-1])
                    self.times.append(time.time())
            time.sleep(0.05)

    @property
    def received(self) -> int:
        with self._lock:
            return sum(self.per_rcpt.values()) if self.kind != "smtp-sink" else self._count

    def reset(self) -> None:
        with self._lock:
            self.per_rcpt.clear()
            self.per_rcpt_order.clear()
            self.times.clear()

    def close(self) -> None:
        if self.kind == "smtp-sink":
            self.proc.terminate()
            self.proc.wait(5)
        else:
            self.controller.stop()


class Stack:
    """A throw-away Outbox: temp dir, database, Redis, workers. The database is SQLite in
    the temp dir, or with --database postgresql a fresh database on a throw-away cluster
    (on BENCH_DATABASE_URL's server when it is set), dropped at the end."""

    def __init__(self, sink_kind: str, env_extra: dict[str, str] | None = None,
                 throttle: tuple[str, int] | None = None):
        from .pgcluster import Cluster, FreshDatabase

        self.dir = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
        self.database = _choice["database"]
        self.cluster = self.fresh = None
        if self.database == "postgresql":
            server = os.environ.get("BENCH_DATABASE_URL")
            if not server:
                self.cluster = Cluster()
                server = f"{self.cluster.base}/postgres"
            self.fresh = FreshDatabase(server)
            db_url = self.fresh.url
        else:
            db_url = f"sqlite:///{self.dir / 'bench.sqlite3'}"
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.dir / "r.sock"), "--save", "",
             "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
        self.redis_url = f"unix://{self.dir / 'r.sock'}"
        for _ in range(100):
            try:
                redis.Redis.from_url(self.redis_url).ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.05)
        self.sink = Sink(sink_kind, throttle) if sink_kind else None
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": self.redis_url, "OUTBOX_INSTANCE": str(self.dir / "instance"),
            "SECRET_KEY": "bench", "BASE_URL": "http://127.0.0.1:5000", "RQ_QUEUE": "bench",
            "SMTP_URL": f"smtp://127.0.0.1:{self.sink.port}" if self.sink else "",
            "FLASK_APP": "app.py", **(env_extra or {}),
        }
        subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers: list[subprocess.Popen] = []
        self.peak_rss_kb = 0
        self._watch = threading.Event()

    @contextmanager
    def app_context(self):
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            from mailing import create_app

            app = create_app()
            with app.app_context():
                yield app
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start_workers(self, n: int, **extra: str) -> list[subprocess.Popen]:
        procs = [subprocess.Popen([sys.executable, "-m", "flask", "worker"], cwd=ROOT,
                                  env={**self.env, **extra}, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
        self.workers.extend(procs)
        if not self._watch.is_set():
            self._watch.set()
            threading.Thread(target=self._watch_rss, daemon=True).start()
        return procs

    def _watch_rss(self) -> None:
        """Peak resident memory of the workers and the job processes they fork."""
        while self._watch.is_set():
            for p in list(self.workers):
                for pid in [p.pid, *(c.pid for c in descendants(p.pid))]:
                    self.peak_rss_kb = max(self.peak_rss_kb, _peak_rss_kb(pid))
            time.sleep(0.2)

    def kill(self, p: subprocess.Popen) -> None:
        signal_tree(p.pid, signal.SIGKILL)
        p.wait(10)

    def close(self) -> None:
        self._watch.clear()
        for p in self.workers:
            stop_tree(p, 15)
        if self.sink:
            self.sink.close()
        self.redis_proc.terminate()
        self.redis_proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.fresh is not None:
            self.fresh.drop()
        if self.cluster is not None:
            self.cluster.stop()


FIELD_VALUES = ["Санкт-Петербург", "Gold plan", "2026-12-01", "Team Orange", "ivan.petrov", "42"]


def bench_domain(i: int, domains: list[str] | None) -> str:
    """Recipient i's domain: the first of `domains` gets every tenth recipient (the one
    a throttling bench defers), the others share the rest in turn."""
    if not domains:
        return "bench.test"
    if len(domains) == 1 or i % 10 == 0:
        return domains[0]
    return domains[1 + (i // 10 * 9 + i % 10 - 1) % (len(domains) - 1)]


def seed_issue(n: int, body: str = BODY, fields: int = 0, domains: list[str] | None = None) -> int:
    """n contacts in one list and a draft issue to them, inserted in bulk. With `fields`,
    each contact has that many custom fields, the body names each of them and the
    subject is personalised too; with `domains`, recipients are spread over them."""
    from mailing.extensions import db
    from mailing.models import Contact, ContactList, Issue, Sender, list_members
    from mailing.stoplists import ensure_system_lists

    ensure_system_lists()
    sender = Sender(name="Bench News", email="news@bench.test")
    lst = ContactList(name="bench")
    db.session.add_all([sender, lst])
    db.session.flush()
    step = 50_000
    for start in range(0, n, step):
        rows = [{"id": i + 1, "email": f"r{i:07d}@{bench_domain(i, domains)}", "name": "Анна Reader" if i % 3 else f"Reader {i}",
                 "attributes": {f"field{f}": f"{FIELD_VALUES[f % len(FIELD_VALUES)]} {i % 97}"
                                for f in range(1, fields + 1)}} for i in range(start, min(start + step, n))]
        db.session.execute(sa.insert(Contact), rows)
        db.session.execute(sa.insert(list_members), [{"list_id": lst.id, "contact_id": r["id"]} for r in rows])
    if db.engine.dialect.name == "postgresql":  # the ids were given: move the sequence past them
        db.session.execute(sa.text("SELECT setval(pg_get_serial_sequence('contacts', 'id'), "
                                   "GREATEST((SELECT max(id) FROM contacts), 1))"))
    subject = "Bench issue"
    if fields:
        from mailing.contacts import register_fields

        register_fields({f"field{f}" for f in range(1, fields + 1)})
        subject = '{{ name }}, news for {{ field1 | default("you") }}'
        body = body.replace("</h1>", "</h1><p>" + ", ".join(
            f"{{{{ field{f} }}}}" for f in range(1, fields + 1)) + "</p>", 1)
    issue = Issue(subject=subject, body_html=body, sender_id=sender.id, list_id=lst.id)
    db.session.add(issue)
    from mailing import settings

    settings.put("launch_delay_seconds", 0)
    db.session.commit()
    return issue.id


def _status(issue_id: int) -> tuple[str, int]:
    from mailing.extensions import db
    from mailing.models import Issue

    row = db.session.execute(sa.select(Issue.status, Issue.sent_count).where(Issue.id == issue_id)).one()
    db.session.commit()
    return row[0], row[1]


def _wait(issue_id: int, statuses: set[str], timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, _ = _status(issue_id)
        if status in statuses:
            return status
        time.sleep(0.1)
    raise click.ClickException(f"issue {issue_id} did not reach {statuses} in {timeout}s")


def _audit(issue_id: int, sink: Sink, recipients: int) -> dict[str, int]:
    """Duplicates and losses, at the sink when it counts per recipient, else from the
    sink's total and the database's attempt counts."""
    from mailing.extensions import db
    from mailing.models import Delivery

    d = Delivery.__table__
    sent, attempts = db.session.execute(sa.select(
        sa.func.count().filter(d.c.state == "sent"), sa.func.coalesce(sa.func.sum(d.c.attempts), 0))
        .where(d.c.issue_id == issue_id)).one()
    db.session.commit()
    if sink.kind != "smtp-sink":
        duplicates = sum(n - 1 for n in sink.per_rcpt.values() if n > 1)
        lost = recipients - len(sink.per_rcpt)
    else:
        time.sleep(0.5)  # the sink prints its counter as sessions end
        duplicates = max(sink.received - recipients, 0, int(attempts) - recipients)
        lost = max(recipients - sink.received, recipients - int(sent), 0)
    return {"received": sink.received, "duplicates": duplicates, "lost": lost}


def _reference_worker(args: tuple[int, int, int, int]) -> int:
    port, threads, count, seed = args
    messages = [(f"r{(seed + i):07d}@bench.test",
                 (f"From: news@bench.test\r\nTo: r{i}@bench.test\r\nSubject: Bench\r\n"
                  f"Message-ID: <{seed}.{i}@bench.test>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                  # a line per paragraph: SMTP's 1,000-octet line limit holds, as in our letters
                  + BODY.replace("{{ name }}", f"Reader {i}").replace("</p>", "</p>\r\n") + "\r\n").encode())
                for i in range(500)]
    share = [count // threads + (1 if t < count % threads else 0) for t in range(threads)]

    def run(n: int) -> None:
        s = smtplib.SMTP("127.0.0.1", port)
        for i in range(n):
            rcpt, data = messages[i % len(messages)]
            s.sendmail("news@bench.test", [rcpt], data)
        s.quit()

    ts = [threading.Thread(target=run, args=(n,)) for n in share]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count


def reference_rate(port: int, processes: int, threads: int, n: int) -> float:
    """Pre-built messages sent by plain smtplib clients, same connection count, no DB, no queue."""
    shares = [n // processes + (1 if p < n % processes else 0) for p in range(processes)]
    started = time.time()
    with Pool(processes) as pool:
        pool.map(_reference_worker, [(port, threads, s, p * 10_000_000) for p, s in enumerate(shares)])
    return n / (time.time() - started)


def emit(result: dict[str, Any]) -> None:
    click.echo(json.dumps({**result, "database": _choice["database"]}))


def _send_run(recipients: int, workers: int, concurrency: int, sink_kind: str, fields: int,
              domains: list[str] | None, pacing: bool, throttle: tuple[str, int] | None,
              reference: bool, dkim: bool = False) -> dict[str, Any]:
    """One launch of a seeded issue through real workers to the sink; with `reference`,
    then the plain client against the same sink."""
    stack = Stack(sink_kind, {"SEND_CONCURRENCY": str(concurrency), "SEND_JOBS": str(workers),
                              "SEND_CHUNK": "500", "LEASE_SECONDS": "60"}, throttle=throttle)
    try:
        with stack.app_context():
            from mailing import lifecycle

            issue_id = seed_issue(recipients, fields=fields, domains=domains)
            signing = bench_dkim.prepare(issue_id) if dkim else {}  # a key, and its in-process cost
            if pacing:
                _pace_every_domain(domains or ["bench.test"])
            stack.start_workers(workers)
            time.sleep(2)  # workers import and connect
            started = time.time()
            lifecycle.launch(issue_id, "bench")
            _wait(issue_id, {"sent", "interrupted"}, 3600)
            seconds = time.time() - started
            audit = _audit(issue_id, stack.sink, recipients)
            assert stack.sink is not None
            first, last = (stack.sink.times[0], stack.sink.times[-1]) if stack.sink.times else (0, 0)
            result: dict[str, Any] = {"seconds": round(seconds, 2), "msgs_per_s": round(recipients / seconds),
                                      **audit, "first_to_last_letter_s": round(last - first, 2)}
            if stack.sink.kind == "aiosmtpd" and domains:
                slow = domains[0] if domains else ""
                with stack.sink._lock:
                    others = [t for (r, t) in zip(stack.sink.per_rcpt_order, stack.sink.times, strict=False)
                              if not r.endswith("@" + slow)]
                result["others_msgs_per_s"] = round(len(others) / (max(others) - started)) if others else 0
                result["deferred_at_sink"] = stack.sink.deferred
        stack._watch.clear()
        result["worker_peak_rss_mb"] = round(stack.peak_rss_kb / 1024, 1)
        if reference:
            stack.sink.reset()
            ref = reference_rate(stack.sink.port, workers, concurrency, recipients)
            result["reference_msgs_per_s"] = round(ref)
            result["ratio"] = round(recipients / seconds / ref, 3)
        if dkim:
            with stack.app_context():
                result.update(signing, **bench_dkim.verify_sample(stack, issue_id, workers, _wait))
        return result
    finally:
        stack.close()


def _pace_every_domain(domains: list[str]) -> None:
    """A group per domain with a limit above what this machine can send: what pacing
    itself costs when it never has to wait."""
    from mailing.extensions import db
    from mailing.models import DomainGroup

    for n, domain in enumerate(domains):
        db.session.add(DomainGroup(name=f"bench {domain}", domains=domain, rate_per_second=50_000, position=100 + n))
    db.session.commit()


@bench.command("send")
@click.option("--recipients", default=200_000, type=int)
@click.option("--workers", default=2, type=int)
@click.option("--concurrency", default=8, type=int)
@click.option("--sink", "sink_kind", type=click.Choice(["smtp-sink", "aiosmtpd"]), default=None)
@click.option("--fields", default=0, type=int, help="custom contact fields in the letter (and a personalised subject)")
@click.option("--domains", default=0, type=int, help="spread the recipients over this many receiving domains")
@click.option("--pacing", is_flag=True, help="a pacing group per domain, with a limit above the machine's speed")
@click.option("--throttle-domain", default=None,
              help="the sink defers this domain (a tenth of the recipients) past --throttle-rate letters/s")
@click.option("--throttle-rate", default=500, type=int)
@click.option("--dkim", is_flag=True, help="sign every letter (RSA-2048); then verify a sample at a capturing sink")
def bench_send(recipients: int, workers: int, concurrency: int, sink_kind: str | None, fields: int,
               domains: int, pacing: bool, throttle_domain: str | None, throttle_rate: int,
               dkim: bool) -> None:
    """Throughput of the real launch path against a sink on loopback, and a reference client.
    With --throttle-domain, also an unthrottled run to compare the other domains with."""
    names: list[str] | None = None
    if domains or throttle_domain:
        names = [f"d{n:02d}.bench.test" for n in range(max(domains, 2))]
        if throttle_domain:
            names[0] = throttle_domain
    if throttle_domain:
        sink_kind = "aiosmtpd"  # it answers per recipient; smtp-sink cannot defer one domain
    sink_kind = sink_kind or ("smtp-sink" if _sink_binary() else "aiosmtpd")
    head = {"recipients": recipients, "workers": workers, "concurrency": concurrency, "sink": sink_kind,
            "fields": fields, "domains": len(names or []), "pacing": pacing, "dkim": dkim}
    if not throttle_domain:
        result = _send_run(recipients, workers, concurrency, sink_kind, fields, names, pacing, None, True, dkim)
        emit({**head, **result})
        return
    calm = _send_run(recipients, workers, concurrency, sink_kind, fields, names, pacing, None, False)
    result = _send_run(recipients, workers, concurrency, sink_kind, fields, names, pacing,
                       (throttle_domain, throttle_rate), True)
    emit({**head, "throttle_domain": throttle_domain, "throttle_rate": throttle_rate, **result,
          "unthrottled_others_msgs_per_s": calm["others_msgs_per_s"],
          "others_ratio": round(result["others_msgs_per_s"] / max(calm["others_msgs_per_s"], 1), 3)})


@bench.command("pause")
@click.option("--recipients", default=20_000, type=int)
@click.option("--workers", default=2, type=int)
@click.option("--concurrency", default=8, type=int)
def bench_pause(recipients: int, workers: int, concurrency: int) -> None:
    """Pause at about a third: letters the sink took after the pause was acknowledged."""
    stack = Stack("aiosmtpd", {"SEND_CONCURRENCY": str(concurrency), "SEND_JOBS": str(workers)})
    try:
        with stack.app_context():
            from mailing import lifecycle

            issue_id = seed_issue(recipients)
            stack.start_workers(workers)
            time.sleep(2)
            lifecycle.launch(issue_id, "bench")
            sink = stack.sink
            assert sink is not None
            while sink.received < recipients // 3:
                time.sleep(0.005)
            clicked = time.time()
            lifecycle.pause(issue_id, "bench")
            acked = time.time()
            time.sleep(2)
            with sink._lock:
                overshoot = sum(1 for t in sink.times if t > acked)
            lifecycle.resume(issue_id, "bench")
            _wait(issue_id, {"sent", "interrupted"}, 3600)
            audit = _audit(issue_id, sink, recipients)
        emit({"recipients": recipients, "overshoot": overshoot, "concurrency": concurrency * workers,
              "pause_ack_ms": round((acked - clicked) * 1000, 1), "duplicates": audit["duplicates"],
              "lost": audit["lost"]})
    finally:
        stack.close()


@bench.command("crash")
@click.option("--recipients", default=20_000, type=int)
@click.option("--concurrency", default=8, type=int)
@click.option("--lease", default=20, type=int, help="LEASE_SECONDS for the run")
def bench_crash(recipients: int, concurrency: int, lease: int) -> None:
    """SIGKILL the worker mid-send, start a new one, let the issue finish."""
    from mailing.models import Delivery

    stack = Stack("aiosmtpd", {"SEND_CONCURRENCY": str(concurrency), "SEND_JOBS": "1",
                               "LEASE_SECONDS": str(lease)})
    try:
        with stack.app_context():
            from mailing import lifecycle
            from mailing.extensions import db

            issue_id = seed_issue(recipients)
            [victim] = stack.start_workers(1)
            time.sleep(2)
            lifecycle.launch(issue_id, "bench")
            sink = stack.sink
            assert sink is not None
            while sink.received < recipients // 3:
                time.sleep(0.01)
            stack.kill(victim)
            killed = time.time()
            in_flight = db.session.scalar(sa.select(sa.func.count()).select_from(Delivery).where(
                Delivery.issue_id == issue_id, Delivery.state == "sending")) or 0
            db.session.commit()
            at_kill = sink.received
            stack.start_workers(1)
            while sink.received <= at_kill:
                time.sleep(0.05)
            recovery = time.time() - killed
            _wait(issue_id, {"sent", "interrupted"}, 3600)
            audit = _audit(issue_id, sink, recipients)
        emit({"recipients": recipients, "in_flight_at_kill": in_flight, "duplicates": audit["duplicates"],
              "lost": audit["lost"], "recovery_s": round(recovery, 2), "lease_seconds": lease})
    finally:
        stack.close()


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    return _peak_rss_kb("self") / 1024


@bench.command("audience")
@click.option("--contacts", default=1_000_000, type=int)
@click.option("--stoplist", default=100_000, type=int)
def bench_audience(contacts: int, stoplist: int) -> None:
    """Launch-time materialisation of the recipients minus the stop-lists."""
    stack = Stack("", {})
    try:
        with stack.app_context():
            from mailing.extensions import db
            from mailing.models import Issue, StopEntry, StopList

            issue_id = seed_issue(contacts)
            blocked = db.session.scalar(sa.select(StopList.id).where(StopList.code == "blocked"))
            every = max(contacts // max(stoplist, 1), 1)
            step = 50_000
            for start in range(0, stoplist, step):
                db.session.execute(sa.insert(StopEntry), [
                    {"list_id": blocked, "kind": "email", "value": f"r{(i * every) % contacts:07d}@bench.test",
                     "source": "import"} for i in range(start, min(start + step, stoplist))])
            db.session.commit()
            db.session.expunge_all()
            import gc

            gc.collect()
            _reset_peak_rss()
            base = _peak_rss_mb()
            issue = db.session.get(Issue, issue_id)
            started = time.time()
            from mailing.store.deliveries import materialise

            counts = materialise(issue)
            db.session.commit()
            seconds = time.time() - started
            peak = _peak_rss_mb()
        emit({"contacts": contacts, "stoplist": stoplist, "recipients": counts["total"] - counts["suppressed"],
              "suppressed": counts["suppressed"], "seconds": round(seconds, 2),
              "peak_rss_mb": round(peak, 1), "peak_rss_growth_mb": round(peak - base, 1)})
    finally:
        stack.close()


class _Browser:
    """A logged-in client that polls the way a page does: one HTTP/1.1 connection kept
    open while the server allows it, the session cookie sent with every request."""

    def __init__(self, base: str, email: str, password: str):
        import http.cookiejar
        import urllib.parse
        import urllib.request

        self.host, self.port = base.removeprefix("http://").split(":")
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(base + "/login").read().decode()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        opener.open(base + "/login", urllib.parse.urlencode(
            {"email": email, "password": password, "csrf_token": token}).encode()).read()
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        self.conn: Any = None

    def get(self, path: str) -> int:
        import http.client

        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
            try:
                self.conn.request("GET", path, headers={"Cookie": self.cookie, "HX-Request": "true"})
                resp = self.conn.getresponse()
                resp.read()
                if resp.will_close:
                    self.conn.close()
                    self.conn = None
                return resp.status
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        return 0


def _poll_group(base: str, clients: list[int], pollers: int, live_id: int, barrier: Any, results: Any,
                warmup: float, duration: float) -> None:
    """One process of dashboard clients: one client in ten pages through Outgoing, the
    others poll the live row once a second as the page does. The first `warmup`
    seconds warm every web process up (imports, templates, statement caches) and are
    not counted: the figures are for a dashboard that has been open a while."""
    browsers = {i: _Browser(base, "bench@outbox.local", "bench-password") for i in clients}
    barrier.wait(timeout=300)
    warm_until = time.time() + warmup
    stop = warm_until + duration
    outgoing: list[float] = []
    progress: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def poll(i: int) -> None:
        time.sleep(i / pollers)  # spread the clients over the polling second, as pages do
        while time.time() < stop:
            url, bucket = ((f"/?page={1 + i % 5}", outgoing) if i % 10 == 0
                           else (f"/issues/{live_id}/row", progress))
            t = time.perf_counter()
            ok = browsers[i].get(url) == 200
            with lock:
                if not ok:
                    failures[0] += 1
                elif time.time() > warm_until:
                    bucket.append((time.perf_counter() - t) * 1000)
            time.sleep(1.0)

    threads = [threading.Thread(target=poll, args=(i,)) for i in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((outgoing, progress, failures[0]))


@bench.command("dashboard")
@click.option("--issues", "n_issues", default=10_000, type=int)
@click.option("--pollers", default=50, type=int)
@click.option("--seconds", "duration", default=10.0, type=float)
@click.option("--warmup", default=3.0, type=float, help="seconds of polling before timing starts")
def bench_dashboard(n_issues: int, pollers: int, duration: float, warmup: float) -> None:
    """The Outgoing page over N issues and P clients polling a live issue's row."""
    stack = Stack("", {})
    web = None
    try:
        with stack.app_context():
            from mailing.cli import create_user
            from mailing.extensions import db
            from mailing.models import Issue

            live_id = seed_issue(1000)
            db.session.execute(sa.update(Issue).where(Issue.id == live_id).values(
                status="sending", total=1000, sent_count=420, started_at=sa.func.current_timestamp()))
            step = 20_000
            for start in range(0, n_issues, step):
                db.session.execute(sa.insert(Issue), [
                    {"subject": f"Issue {i}", "body_html": "<p>x</p>", "status": ("draft", "sent", "cancelled",
                     "paused")[i % 4], "total": 1000, "sent_count": 1000 if i % 4 == 1 else 0,
                     "released": False, "settings": {}}
                    for i in range(start, min(start + step, n_issues))])
            create_user("bench@outbox.local", "support", "bench-password")
            db.session.commit()
        port = _free_port()
        web = subprocess.Popen(web_command(port), cwd=ROOT, env=stack.env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                _Browser(base, "bench@outbox.local", "bench-password")
                break
            except OSError:
                time.sleep(0.1)
        # Clients live in several processes, as browsers do, so that the measuring side does
        # not queue its own requests behind one interpreter.
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        groups = max(1, min(pollers, 5))
        barrier, results = ctx.Barrier(groups + 1), ctx.Queue()
        procs = [ctx.Process(target=_poll_group, args=(
            base, [i for i in range(pollers) if i % groups == g], pollers, live_id, barrier, results,
            warmup, duration)) for g in range(groups)]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=300)  # everyone is logged in (password hashing is slow on purpose)
        outgoing: list[float] = []
        progress: list[float] = []
        for _ in procs:
            out, prog, failures = results.get(timeout=warmup + duration + 120)
            if failures:
                raise click.ClickException(f"{failures} requests did not answer 200")
            outgoing.extend(out)
            progress.extend(prog)
        for proc in procs:
            proc.join(10)

        def pct(xs: list[float], q: float) -> float:
            xs = sorted(xs)
            return round(xs[max(int(len(xs) * q) - 1, 0)], 1) if xs else 0.0

        emit({"issues": n_issues, "pollers": pollers, "outgoing_p95_ms": pct(outgoing, 0.95),
              "progress_p95_ms": pct(progress, 0.95), "outgoing_p50_ms": pct(outgoing, 0.5),
              "progress_p50_ms": pct(progress, 0.5), "requests": len(outgoing) + len(progress)})
    finally:
        if web is not None:
            stop_tree(web, 5)
        stack.close()


@bench.command("import")
@click.option("--rows", default=1_000_000, type=int)
def bench_import(rows: int) -> None:
    """A CSV of N contacts (email, name, phone, an extra column) imported into a list."""
    stack = Stack("", {})
    try:
        path = stack.dir / "contacts.csv"
        with open(path, "w", encoding="utf-8") as f:
            f.write("email,name,phone,city\n")
            for i in range(rows):
                f.write(f"user{i:07d}@Example.org,Reader {i},+7912{i % 10_000_000:07d},City {i % 100}\n")
        with stack.app_context():
            from mailing.contacts import run_import
            from mailing.extensions import db
            from mailing.models import ContactImport, ContactList

            lst = ContactList(name="bench import")
            db.session.add(lst)
            db.session.flush()
            imp = ContactImport(list_id=lst.id, path=str(path), filename="contacts.csv",
                                size_bytes=path.stat().st_size, rejected=[])
            db.session.add(imp)
            db.session.commit()
            _reset_peak_rss()
            started = time.time()
            imp = run_import(imp.id, "RU")
            seconds = time.time() - started
            emit({"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
                  "imported": imp.imported, "updated": imp.updated, "rejected": imp.rejected_count,
                  "peak_rss_mb": round(_peak_rss_mb(), 1)})
    finally:
        stack.close()


@bench.command("stoplist")
@click.option("--lines", default=100_000, type=int)
def bench_stoplist(lines: int) -> None:
    """A paste of N lines (emails, phones, some rubbish) into Blocked manually."""
    stack = Stack("", {})
    try:
        text = "\n".join(
            f"person{i}@Example.org" if i % 10 else (f"+7 912 {i % 1000:03d}-{i % 100:02d}-{i % 97:02d}" if i % 20 else "rubbish")
            for i in range(lines))
        with stack.app_context():
            from mailing import stoplists
            from mailing.extensions import db
            from mailing.models import StopList

            stoplists.ensure_system_lists()
            db.session.commit()
            blocked = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
            started = time.time()
            report = stoplists.add_pasted(blocked, text, actor="bench", source="ui", region="RU")
            seconds = time.time() - started
        emit({"lines": lines, "seconds": round(seconds, 2), "added": report.added, "already": report.already,
              "rejected": len(report.rejected)})
    finally:
        stack.close()


@bench.command("trigger")
@click.option("--rate", default=100, type=int, help="participants per second through the API")
@click.option("--seconds", "duration", default=30.0, type=float)
@click.option("--workers", default=2, type=int)
def bench_trigger(rate: int, duration: float, workers: int) -> None:
    """A live triggered mailing fed through the real web server's API at a steady rate,
    each call retried once with its idempotency key: the time from the API's answer to the
    relay's 250 for that participant, and how many letters a retried key made."""
    import urllib.request

    stack = Stack("aiosmtpd", {"SEND_JOBS": "1", "SEND_CONCURRENCY": "4"})
    web = None
    try:
        with stack.app_context():
            from mailing import lifecycle
            from mailing.cli import create_user
            from mailing.extensions import db
            from mailing.models import ApiToken, Issue
            from mailing.views.api import token_hash

            issue_id = seed_issue(0, body=BODY.replace("{{ name }}", "{{ name }}, order {{ order }}"))
            db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(kind="triggered"))
            user, _pw = create_user("bench@outbox.local", "editor", "bench-password")
            token = "obx_bench_trigger"
            db.session.add(ApiToken(user_id=user.id, name="bench", token_hash=token_hash(token)))
            from mailing import settings

            # An integration sending 200 calls a second is given a limit above that by its admin.
            settings.put("api_requests_per_minute", 0)
            db.session.commit()
            lifecycle.launch(issue_id, user)
        stack.start_workers(workers)
        port = _free_port()
        web = subprocess.Popen(web_command(port, processes=4), cwd=ROOT, env=stack.env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/api/v1/triggers/{issue_id}/participants"

        def call(i: int) -> float:
            body = json.dumps({"email": f"p{i:06d}@bench.example", "name": f"Buyer {i}", "fields": {"order": str(i)},
                               "idempotency_key": f"bench-{i}"}).encode()
            req = urllib.request.Request(url, body, {"Authorization": f"Bearer {token}",
                                                     "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
            return time.time()

        for _ in range(200):  # the web server is up when it answers
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2)  # workers import and connect
        answered: dict[str, float] = {}
        lock = threading.Lock()
        total = int(rate * duration)
        started = time.time()

        def one(i: int) -> None:
            at = call(i)
            with lock:
                answered[f"p{i:06d}@bench.example"] = at
            call(i)  # the caller retries with the same key: no second letter

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=32) as pool:
            futures = []
            for i in range(total):
                pause = started + i / rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                futures.append(pool.submit(one, i))
            failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            raise click.ClickException(f"{len(failed)} API calls failed, the first: {failed[0]!r}")
        deadline = time.time() + 60
        while stack.sink.received < total and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # letters a retried key might still make
        with stack.sink._lock:
            first_at: dict[str, float] = {}
            for r, t in zip(stack.sink.per_rcpt_order, stack.sink.times, strict=False):
                first_at.setdefault(r, t)
            duplicates = sum(n - 1 for n in stack.sink.per_rcpt.values() if n > 1)
        lat = sorted(max(first_at[r] - at, 0.0) * 1000 for r, at in answered.items() if r in first_at)

        def pct(q: float) -> float:
            return round(lat[max(int(len(lat) * q) - 1, 0)], 1) if lat else 0.0

        emit({"rate": rate, "seconds": duration, "participants": total, "received": len(first_at),
              "duplicates": duplicates, "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)})
    finally:
        if web is not None:
            stop_tree(web, 5)
        stack.close()


@bench.command("bounces")
@click.option("--reports", "n_reports", default=100_000, type=int)
@click.option("--batch", default=500, type=int, help="reports taken in per transaction (as the Maildir scan does)")
def bench_bounces(n_reports: int, batch: int) -> None:
    """Late bounces and complaints of mixed shapes (RFC 3464 from Postfix, Gmail and Exim,
    qmail's plain text, ARF complaints, a few unreadable ones), parsed, matched to the
    deliveries of a sent issue by VERP address or Message-ID, and applied."""
    import resource

    from . import dsn

    stack = Stack("", {"BOUNCE_DOMAIN": "bounce.bench.example"})
    try:
        with stack.app_context() as app:
            from mailing import bounces, verp
            from mailing.extensions import db
            from mailing.models import Delivery, Issue
            from mailing.sending.letter import message_id

            recipients = max(n_reports // 2, 1)
            issue_id = seed_issue(recipients)
            secret = app.config["SECRET_KEY"].encode()
            db.session.execute(sa.update(Issue).where(Issue.id == issue_id).values(
                status="sent", total=recipients, sent_count=recipients))
            step = 20_000
            for start in range(0, recipients, step):
                db.session.execute(sa.insert(Delivery), [
                    {"issue_id": issue_id, "contact_id": i + 1, "email": f"r{i:07d}@bench.example",
                     "email_key": f"r{i:07d}@bench.example", "name": "", "state": "sent", "attempts": 1,
                     "reply_code": 250, "message_id": message_id(secret, issue_id, i + 1, "bench.test")}
                    for i in range(start, min(start + step, recipients))])
            # A live account: stop-lists already hold people (100,000 old unsubscribes), and
            # its tables have planner statistics (autovacuum keeps them on a running server).
            from datetime import UTC, datetime

            from mailing.models import StopEntry, StopList
            from mailing.stoplists import ensure_system_lists

            ensure_system_lists()
            db.session.flush()
            unsub = db.session.scalar(sa.select(StopList.id).where(StopList.code == "unsubscribed"))
            for start in range(0, 100_000, step):
                db.session.execute(sa.insert(StopEntry.__table__), [
                    {"list_id": unsub, "kind": "email", "value": f"old{i:07d}@elsewhere.example", "source": "import",
                     "created_at": datetime.now(UTC).replace(tzinfo=None)} for i in range(start, start + step)])
            db.session.commit()
            with db.engine.connect() as conn:  # outside a transaction: PostgreSQL's ANALYZE needs none
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
            ids = db.session.scalars(sa.select(Delivery.id).where(Delivery.issue_id == issue_id)
                                     .order_by(Delivery.contact_id)).all()

            def report(n: int) -> bytes:
                i = n % recipients
                mid = message_id(secret, issue_id, i + 1, "bench.test")
                rcpt = f"r{i:07d}@bench.example"
                if n % 100 == 99:
                    return dsn.garbage(n)
                if n % 50 == 7:
                    return dsn.complaint(message_id=mid, n=n)
                shape = dsn.SHAPES[n % 4]
                to = verp.address(secret, ids[i], "bounce.bench.example") if n % 2 else "news@bench.test"
                return dsn.dsn(shape, rcpt=rcpt, message_id=mid, to=to, hard=n % 3 != 0, n=n)

            outcomes: Counter[str] = Counter()
            started = time.time()
            for start in range(0, n_reports, batch):
                items = [bounces.Incoming(report(n), "maildir") for n in range(start, min(start + batch, n_reports))]
                for got in bounces.receive(items):
                    outcomes[got.outcome] += 1
            seconds = time.time() - started
            bounced = db.session.scalar(sa.select(Issue.bounced_count).where(Issue.id == issue_id))
            db.session.commit()
        emit({"reports": n_reports, "applied": outcomes["applied"], "quarantined": outcomes["quarantined"],
              "duplicates": outcomes["duplicate"], "bounced_deliveries": bounced, "seconds": round(seconds, 2),
              "reports_per_s": round(n_reports / seconds),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    finally:
        stack.close()
