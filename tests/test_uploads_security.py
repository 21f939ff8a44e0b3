"""Issue 16, findings 3 (uploads) and 6 (files): request size limits enforced from the
Content-Length before the body is read, large stop-list CSVs imported by an RQ job outside
the write lock, upload files 0600 and deleted when their job ends, and instance/, the SQLite
database and the secret key readable by their owner only."""

from __future__ import annotations

import http.cookiejar
import io
import json
import multiprocessing
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.test import EnvironBuilder

from mailing.extensions import db
from mailing.models import (
    ContactImport,
    ContactList,
    StopEntry,
    StopEvent,
    StopList,
    StopListImport,
)

from .support import BACKEND, ROOT, csrf_from, wait_for

MB = 1024 * 1024


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def blocked_list() -> StopList:
    stop = db.session.scalar(sa.select(StopList).where(StopList.code == "blocked"))
    db.session.commit()
    return stop


def count(model) -> int:
    n = db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
    db.session.commit()
    return n


def import_files(env) -> list[Path]:
    folder = Path(env["OUTBOX_INSTANCE"]) / "imports"
    return sorted(folder.glob("*")) if folder.exists() else []


# --- size limits ----------------------------------------------------------------------

class CountingStream(io.BytesIO):
    """A request body that counts what the app reads of it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.consumed = 0

    def read(self, n: int | None = -1) -> bytes:
        chunk = super().read(n)
        self.consumed += len(chunk)
        return chunk

    def readline(self, n: int | None = -1) -> bytes:
        chunk = super().readline(n)
        self.consumed += len(chunk)
        return chunk


def call_raw(app, path: str, length: int, body: bytes, content_type: str, headers: dict | None = None):
    """Call the WSGI app with a Content-Length that the body does not have (as a client that
    announces 50 MB would): what status, what page, and how much of the body was read."""
    environ = EnvironBuilder(path=path, method="POST", headers={"Content-Type": content_type, **(headers or {})},
                             data=b"").get_environ()
    stream = CountingStream(body)
    environ["CONTENT_LENGTH"] = str(length)
    environ["wsgi.input"] = stream
    status: list[str] = []
    chunks = app(environ, lambda s, h, exc_info=None: status.append(s))
    page = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return int(status[0].split()[0]), page.decode(), stream.consumed


def test_oversize_post_to_login_is_refused_before_anything_reads_it(app):
    ran: list[str] = []
    login_view = app.view_functions["auth.login"]

    def watched(*args, **kwargs):
        ran.append("login")
        return login_view(*args, **kwargs)

    app.view_functions["auth.login"] = watched
    status, page, consumed = call_raw(app, "/login", 50 * MB, b"email=a%40b.c&password=x&csrf_token=t",
                                      "application/x-www-form-urlencoded")
    assert status == 413 and "too large" in page and "2 MB" in page
    assert consumed == 0, "the body is not read"
    assert ran == [], "neither CSRF nor the view got to run"
    # Within the limit the same request reaches the CSRF check as before.
    status, page, _ = call_raw(app, "/login", 37, b"email=a%40b.c&password=x&csrf_token=t",
                               "application/x-www-form-urlencoded")
    assert status == 400 and "CSRF" in page


def test_oversize_api_request_gets_json(app):
    status, page, consumed = call_raw(app, "/api/v1/stoplists/1/entries", 3 * MB, b'{"entries": []}',
                                      "application/json", {"Authorization": "Bearer nothing"})
    assert status == 413 and consumed == 0
    assert json.loads(page) == {"error": "too_large", "message": "The request is too large: at most 2 MB."}


def read_http_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(head.split()[1]), body


def test_served_login_answers_413_to_50_mb_without_waiting_for_the_body(web):
    """gunicorn as `make run` serves the app: a client that announces 50 MB and sends 40
    bytes gets its 413 at once; a server that read the body would wait for the rest."""
    host, port = urllib.parse.urlsplit(web).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: " + str(50 * MB).encode() + b"\r\n\r\n"
                     b"email=someone%40example.org&password=x")
        status, body = read_http_response(sock)
        elapsed = time.monotonic() - started
    assert status == 413 and b"too large" in body
    assert elapsed < 3, f"answered after {elapsed:.1f} s"


@pytest.fixture
def small_limits(app):
    """2 MB and 100 MB scaled down, so that the test files stay small."""
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, MAX_IMPORT_BYTES=256 * 1024)
    return app


def test_oversize_import_is_refused_with_a_clear_message_and_nothing_written(small_limits, client, login, env):
    login("editor")
    lst = ContactList(name="People")
    db.session.add(lst)
    db.session.commit()
    blocked = blocked_list()
    token = csrf_from(client.get(f"/stoplists/{blocked.id}").data)
    big = b"email\n" + b"".join(b"person%06d@example.org\n" % i for i in range(13_000))  # ~300 KB
    assert len(big) > 256 * 1024
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(big), "big.csv"), "confirm": "y", "csrf_token": token},
        content_type="multipart/form-data")
    assert r.status_code == 413
    assert "The file is too large: imports take at most 0.25 MB. Split it into smaller files." in r.data.decode()
    r = client.post(f"/lists/{lst.id}/import", data={"file": (io.BytesIO(big), "big.csv"), "csrf_token": token},
                    content_type="multipart/form-data")
    assert r.status_code == 413 and "imports take at most 0.25 MB" in r.data.decode()
    htmx = client.post(f"/lists/{lst.id}/import", data={"file": (io.BytesIO(big), "big.csv"), "csrf_token": token},
                       content_type="multipart/form-data", headers={"HX-Request": "true"})
    assert htmx.status_code == 413 and "imports take at most" in htmx.data.decode(), "htmx gets the partial"
    assert count(StopEntry) == 0 and count(StopEvent) == 0 and count(StopListImport) == 0
    assert count(ContactImport) == 0 and import_files(env) == []


def test_an_import_size_file_is_accepted_only_on_the_import_routes(small_limits, client, login, env):
    login("editor")
    lst = ContactList(name="People")
    db.session.add(lst)
    db.session.commit()
    blocked = blocked_list()
    token = csrf_from(client.get(f"/stoplists/{blocked.id}").data)
    mid = b"email\n" + b"".join(b"person%05d@example.org\n" % i for i in range(8000))  # ~190 KB
    assert 64 * 1024 < len(mid) < 256 * 1024
    r = client.post(f"/lists/{lst.id}/import", data={"file": (io.BytesIO(mid), "mid.csv"), "csrf_token": token},
                    content_type="multipart/form-data")
    assert r.status_code == 302 and "/imports/" in r.headers["Location"]
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(mid), "mid.csv"), "confirm": "y", "csrf_token": token},
        content_type="multipart/form-data", follow_redirects=True)
    assert r.status_code == 200 and "Added: 8000" in r.data.decode()
    # The same size anywhere else is refused by the global limit.
    r = client.post("/lists", data={"name": "x" * (100 * 1024), "csrf_token": token})
    assert r.status_code == 413 and "The request is too large: at most 0.0625 MB." in r.data.decode()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ContactList)) == 1


# --- stop-list CSVs -------------------------------------------------------------------

def stoplist_csv(chunk: int) -> tuple[bytes, int]:
    """A header, 2 chunks + 2,000 addresses, rubbish on line 5, a repeat of line 2 on line 7,
    a phone on line 9 and, in the third chunk, line 2's address once more."""
    rows = ["email,name"] + [f"p{i}@example.org,P" for i in range(2 * chunk + 2000)]
    rows[4] = "rubbish,x"
    rows[6] = "p0@example.org,again"
    rows[8] = '"+7 912 345-67-89",phone'
    rows[2 * chunk + 3] = "p0@example.org,third chunk"
    return ("\n".join(rows) + "\n").encode(), len(rows)


def wait_import(imp_id: int, states=("done", "failed"), timeout: float = 60) -> StopListImport:
    def finished():
        db.session.commit()
        imp = db.session.get(StopListImport, imp_id, populate_existing=True)
        db.session.commit()
        return imp if imp.state in states else None

    return wait_for(finished, timeout, what=f"stop-list import {imp_id} to reach {states}")


def test_large_stoplist_csv_is_a_job_with_progress_and_a_per_line_report(app, client, login, workers, env):
    from mailing.stopimports import CHUNK

    app.config["STOPLIST_JOB_BYTES"] = 10 * 1024
    login("editor")
    blocked = blocked_list()
    token = csrf_from(client.get(f"/stoplists/{blocked.id}").data)
    data, rows = stoplist_csv(CHUNK)
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(data), "from-esp.csv"), "confirm": "y", "csrf_token": token},
        content_type="multipart/form-data")
    assert r.status_code == 303, "a POST answers with a redirect to the import's page"
    imp_id = int(r.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    assert count(StopEntry) == 0, "the web request adds nothing itself"
    [upload] = import_files(env)
    assert mode(upload) == 0o600 and mode(upload.parent) == 0o700
    assert upload.read_bytes() == data
    queued = client.get(f"/stoplists/imports/{imp_id}", headers={"HX-Request": "true"}).data.decode()
    assert 'data-state="queued"' in queued and 'hx-trigger="every 1s"' in queued

    workers.start(1)
    imp = wait_import(imp_id)
    assert imp.state == "done", imp.error
    assert (imp.lines, imp.rejected_count, imp.already) == (rows, 3, 1)
    assert imp.added == rows - 3 - 1  # every line but the rejected ones and the one already there
    assert [(line, text) for line, text, _why in imp.rejected] == [(1, "email"), (5, "rubbish"), (7, "p0@example.org")]
    assert imp.rejected[2][2] == "repeated (first on line 2)", "line numbers are the file's, not the chunk's"
    assert imp.percent == 100 and imp.read_bytes == imp.size_bytes == len(data)
    entries = db.session.scalar(sa.select(sa.func.count()).select_from(StopEntry).where(StopEntry.list_id == blocked.id))
    sources = set(db.session.scalars(sa.select(StopEvent.source).where(StopEvent.list_id == blocked.id)))
    db.session.commit()
    assert entries == imp.added and sources == {"import"}
    assert db.session.scalar(sa.select(StopEntry.id).where(StopEntry.value == "+79123456789"))
    db.session.commit()
    wait_for(lambda: import_files(env) == [], 10, what="the file deleted when the job ends")

    done = client.get(f"/stoplists/imports/{imp_id}", headers={"HX-Request": "true"}).data.decode()
    assert 'data-state="done"' in done and "hx-trigger" not in done and "rubbish" in done
    page = client.get(f"/stoplists/imports/{imp_id}").data.decode()
    assert "from-esp.csv" in page and "Blocked manually" in page
    assert "from-esp.csv" in client.get(f"/stoplists/{blocked.id}").data.decode(), "listed on the stop-list"


def test_a_failed_stoplist_import_says_why_and_deletes_its_file(app, client, login, workers, env):
    app.config["STOPLIST_JOB_BYTES"] = 1024
    login("editor")
    blocked = blocked_list()
    token = csrf_from(client.get(f"/stoplists/{blocked.id}").data)
    data = b"ok@example.org\n" + b'"' + b"x" * 200_000 + b'"\n'  # past the csv module's field limit
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(data), "broken.csv"), "confirm": "y", "csrf_token": token},
        content_type="multipart/form-data")
    assert r.status_code == 303
    imp_id = int(r.headers["Location"].rsplit("/", 1)[1])
    workers.start(1)
    imp = wait_import(imp_id)
    assert imp.state == "failed" and imp.error.startswith("line 2:")
    wait_for(lambda: import_files(env) == [], 10, what="the file deleted after the failure")
    page = client.get(f"/stoplists/imports/{imp_id}", headers={"HX-Request": "true"}).data.decode()
    assert 'data-state="failed"' in page and "line 2:" in page and "hx-trigger" not in page


def test_large_file_and_pasted_text_together_are_refused_next_to_the_field(app, client, login, env):
    app.config["STOPLIST_JOB_BYTES"] = 1024
    login("editor")
    blocked = blocked_list()
    token = csrf_from(client.get(f"/stoplists/{blocked.id}").data)
    data, _rows = stoplist_csv(100)
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "items": "a@example.org", "upload": (io.BytesIO(data), "x.csv"), "confirm": "y", "csrf_token": token},
        content_type="multipart/form-data")
    assert r.status_code == 400 and "A large file is imported on its own" in r.data.decode()
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(data), "x.csv"), "csrf_token": token}, content_type="multipart/form-data")
    assert r.status_code == 400 and "Tick the box" in r.data.decode()
    assert count(StopListImport) == 0 and import_files(env) == [] and count(StopEntry) == 0


def test_stoplist_lines_are_checked_outside_any_write_transaction(app, client, login, api_client, monkeypatch):
    """The structural property behind the 7.4 s wait: while a paste or a small CSV is being
    checked, nobody holds the write lock (on SQLite another connection can take it at once)."""
    from mailing import stoplists

    real = stoplists.parse_paste
    seen: list[str] = []

    def watched(text: str, region: str):
        if db.session().in_transaction():
            seen.append("transaction open")
        if BACKEND == "sqlite":
            other = sqlite3.connect(db.engine.url.database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                seen.append("free")
            except sqlite3.OperationalError as exc:
                seen.append(str(exc))
            finally:
                other.close()
        else:
            seen.append("free")
        return real(text, region)

    monkeypatch.setattr(stoplists, "parse_paste", watched)
    login("editor")
    blocked = blocked_list()
    token = csrf_from(client.get(f"/stoplists/{blocked.id}").data)
    r = client.post(f"/stoplists/{blocked.id}/add", data={
        "upload": (io.BytesIO(b"a@example.org\nb@example.org\n"), "small.csv"), "confirm": "y",
        "csrf_token": token}, content_type="multipart/form-data", follow_redirects=True)
    assert r.status_code == 200 and "Added: 2" in r.data.decode()
    r = client.post(f"/stoplists/{blocked.id}/add", data={"items": "c@example.org", "confirm": "y",
                                                           "csrf_token": token}, follow_redirects=True)
    assert r.status_code == 200 and "Added: 1" in r.data.decode()
    api = api_client("editor")
    r = api.post(f"/stoplists/{blocked.id}/entries", json={"entries": ["d@example.org"]})
    assert r.status_code == 200 and r.get_json()["added"] == 1
    assert seen == ["free", "free", "free"]


class Http:
    """A cookie-keeping client for the served app that does not follow redirects."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect())

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, dict, str]:
        return self.request(path, urllib.parse.urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def post_file(self, path: str, fields: dict[str, str], name: str, filename: str, content: bytes):
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: text/csv\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_small_post_is_not_held_up_while_a_large_stoplist_csv_is_imported(web, make_user, workers):
    """The served app and a real worker: while a 100,000-line CSV is being added, creating a
    list (a write) still answers at once, again and again."""

    workers.start(1)
    user, password = make_user("editor")
    blocked = blocked_list()
    client = Http(web)
    _s, _h, page = client.request("/login")
    status, _h, _p = client.post_form("/login", {"email": user.email, "password": password,
                                                 "csrf_token": csrf_from(page)})
    assert status == 302
    _s, _h, page = client.request(f"/stoplists/{blocked.id}")
    token = csrf_from(page)
    lines = 100_000  # some 2.6 MB: a job
    data = b"".join(b"someone%06d@example.org\n" % i for i in range(lines))
    assert len(data) > MB, "over the default STOPLIST_JOB_BYTES: a job"
    status, headers, _p = client.post_file(f"/stoplists/{blocked.id}/add", {"csrf_token": token, "confirm": "y"},
                                           "upload", "big.csv", data)
    assert status == 303
    partial = headers["Location"]

    def progress() -> tuple[str, int]:
        _s, _h, html = client.request(partial, headers={"HX-Request": "true"})
        state = html.split('data-state="', 1)[1].split('"', 1)[0]
        done_lines = int(html.split('<span class="lines">', 1)[1].split("<", 1)[0])
        return state, done_lines

    wait_for(lambda: progress()[0] == "running", 60, 0.02, "the import to be under way")
    # Each POST counts if the import was still running when it began: one that waited
    # for the import's write lock would take as long as the rest of the import.
    timings: list[float] = []
    while len(timings) < 5:
        state, done_lines = progress()
        if state != "running":
            break
        assert done_lines < lines
        started = time.monotonic()
        status, _h, _p = client.post_form("/lists", {"name": f"list {len(timings)}", "csrf_token": token})
        timings.append(time.monotonic() - started)
        assert status == 302
    print(f"small POSTs during the import: {[round(t, 3) for t in timings]} s")
    assert timings, "the import was running when the first POST began, so one is measured"
    assert max(timings) < 1.0, f"a small POST waited {max(timings):.2f} s during the import"
    state, done_lines = wait_for(lambda: (p := progress())[0] in ("done", "failed") and p, 120, 0.2,
                                 "the import to finish")
    assert (state, done_lines) == ("done", lines)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StopEntry)) == lines
    db.session.commit()


# --- contact import files -------------------------------------------------------------

def test_contact_import_file_is_0600_and_deleted_when_the_job_ends(ctx, client, login, workers, env):
    login("editor")
    lst = ContactList(name="People")
    db.session.add(lst)
    db.session.commit()
    token = csrf_from(client.get(f"/lists/{lst.id}").data)
    ids = []
    for name, body in (("good.csv", b"email,name\nann@example.org,Ann\n"), ("bad.csv", b"name\nno address column\n")):
        r = client.post(f"/lists/{lst.id}/import", data={"file": (io.BytesIO(body), name), "csrf_token": token},
                        content_type="multipart/form-data")
        assert r.status_code == 302
        ids.append(int(r.headers["Location"].rsplit("/", 1)[1]))
    files = import_files(env)
    assert len(files) == 2 and {mode(f) for f in files} == {0o600} and mode(files[0].parent) == 0o700
    workers.start(1)

    def states():
        db.session.commit()
        found = [db.session.get(ContactImport, i, populate_existing=True).state for i in ids]
        db.session.commit()
        return found if all(s in ("done", "failed") for s in found) else None

    assert wait_for(states, 30, what="both imports") == ["done", "failed"]
    # The job deletes the file just after it records the end.
    wait_for(lambda: import_files(env) == [], 10, what="the files deleted after success and after failure")


# --- instance folder, database, secret key ----------------------------------------------

def test_fresh_install_keeps_instance_database_and_key_private(tmp_path):
    """`flask db upgrade` on a fresh install, under the usual umask 022."""
    instance = tmp_path / "fresh" / "instance"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    env.update(OUTBOX_INSTANCE=str(instance), FLASK_APP="app.py", REDIS_URL="redis://127.0.0.1:1")
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o022))
    assert mode(instance) == 0o700
    database = instance / "outbox.sqlite3"
    assert database.stat().st_size > 0
    for f in instance.iterdir():
        assert mode(f) & 0o077 == 0, f"{f.name} is {oct(mode(f))}"
    assert mode(database) == 0o600 and mode(instance / "secret_key") == 0o600


def test_an_older_install_is_narrowed_on_start(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    instance.chmod(0o755)
    for name in ("outbox.sqlite3", "secret_key"):
        (instance / name).write_text("" if name.endswith("3") else "k" * 64)
        (instance / name).chmod(0o644)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("OUTBOX_INSTANCE", str(instance))
    from mailing import create_app

    app = create_app()
    assert app.config["SECRET_KEY"] == "k" * 64
    assert mode(instance) == 0o700
    assert mode(instance / "outbox.sqlite3") == 0o600 and mode(instance / "secret_key") == 0o600


WATCH_SECRET_KEY = textwrap.dedent('''
    import os, stat, sys
    from pathlib import Path

    from mailing.config import _secret_key

    instance = Path(sys.argv[1])
    os.umask(0)  # the worst case: nothing masks a mode the code leaves open
    seen, busy = [], [False]

    def hook(event, args):
        # After every audited step (open, link, chmod, ...), look at every file there.
        if busy[0] or not instance.exists():
            return
        busy[0] = True
        try:
            for p in instance.iterdir():
                try:
                    m = stat.S_IMODE(p.lstat().st_mode)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(p.lstat().st_mode) and m & 0o077:
                    seen.append(f"{event}:{p.name}:{oct(m)}")
        finally:
            busy[0] = False

    sys.addaudithook(hook)
    key = _secret_key(instance)
    # A control: the old way (write, then chmod) must be caught by this watch.
    (instance / "control").write_text("x")
    os.chmod(instance / "control", 0o600)
    print(key)
    print("|".join(sorted(set(seen))))
''')


def test_secret_key_is_never_readable_by_others_even_for_a_moment(tmp_path):
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    out = subprocess.run([sys.executable, "-c", WATCH_SECRET_KEY, str(instance)], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout.splitlines()
    key, seen = out[0], out[1].split("|")
    assert seen == ["os.chmod:control:0o666"], f"seen with group/other bits: {seen}"
    assert len(key) == 64 and (instance / "secret_key").read_text().strip() == key
    assert mode(instance / "secret_key") == 0o600 and mode(instance) == 0o700


def _make_key(instance: str, barrier, results) -> None:
    from mailing.config import _secret_key

    barrier.wait()
    results.put(_secret_key(Path(instance)))


def test_two_processes_creating_the_secret_key_at_once_agree(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    instance = tmp_path / "instance"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_make_key, args=(str(instance), barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    keys = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert (instance / "secret_key").read_text() == keys[0]
    assert [p.name for p in instance.iterdir()] == ["secret_key"], "no temporary files left"
