"""Russian is complete: every string the code and templates mark for translation is in
the catalogue, translated, not fuzzy, with every plural form."""

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "mailing/translations/ru/LC_MESSAGES/messages.po"


def _catalogue():
    with CATALOGUE.open("rb") as f:
        return read_po(f, locale="ru")


def test_every_entry_is_translated_and_not_fuzzy():
    problems = []
    for m in _catalogue():
        if not m.id:
            continue
        forms = m.string if isinstance(m.string, tuple | list) else (m.string,)
        if m.fuzzy or not all(forms):
            problems.append(m.id if isinstance(m.id, str) else m.id[0])
        if isinstance(m.id, tuple | list) and len(forms) != 3:
            problems.append(f"{m.id[0]} (Russian has three plural forms)")
    assert problems == []


def test_every_marked_string_is_in_the_catalogue():
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    known = {m.id if isinstance(m.id, str) else m.id[0] for m in _catalogue() if m.id}
    missing = set()
    keywords = {"_": None, "_l": None, "gettext": None, "lazy_gettext": None, "ngettext": (1, 2)}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=keywords,
            directory_filter=lambda path: Path(path).name not in {".venv", "node_modules", ".git", "tests"}):
        msgid = message if isinstance(message, str) else message[0]
        if msgid and msgid not in known:
            missing.add(f"{filename}: {msgid[:80]}")
    assert sorted(missing) == [], "run `make messages` and translate"


# Interface words that must never show on a Russian page (data such as a subject may be
# English; these are the product's own words).
ENGLISH = ("Outgoing", "Job journal", "Contacts", "Stop-lists", "Moderation", "Recipient lookup", "Settings",
           "Log out", "Subject", "Sender", "Launch", "Save", "Search", "Delivery state", "Server response",
           "Report", "Recipients", "Unsubscribed from all", "Blocked manually", "Undeliverable", "Materials",
           "Letter package", "Bounces", "Pacing", "Sent per minute", "Top receiving domains", "Draft",
           "Add a material", "Letter templates", "Quarantine", "Who will get it", "Test letter")


def test_pages_in_russian_show_no_english_interface_words(ctx, client, login, make_issue):
    import re

    from mailing.extensions import db
    from mailing.models import User

    issue_id = make_issue(3, subject="Новости")
    admin = login("admin")
    db.session.get(User, admin.id).locale = "ru"
    db.session.commit()
    pages = ["/", f"/issues/{issue_id}", f"/issues/{issue_id}?tab=responses", f"/issues/{issue_id}?tab=report",
             "/issues/new", "/contacts", "/stoplists/", "/moderation", "/journal", "/admin/settings",
             "/admin/package", "/admin/bounces", "/admin/pacing", "/materials", "/templates",
             f"/issues/{issue_id}/assemble", "/profile"]
    found = {}
    for path in pages:
        r = client.get(path)
        assert r.status_code == 200, path
        text = re.sub(r"<script.*?</script>|<style.*?</style>|<pre.*?</pre>|<[^>]+>", " ", r.text, flags=re.S)
        hits = [w for w in ENGLISH if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]
        if hits:
            found[path] = hits
    assert found == {}
