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
