"""Letters assembled from materials: the library, templates with a {{ materials }} block,
assembling a draft (remove one, add one from another section), correcting it in the
editor and sending it; the sanitiser on every way HTML comes in."""

import email
import email.policy

import pytest
import sqlalchemy as sa

from mailing import lifecycle, materials
from mailing.extensions import db
from mailing.models import Issue, LetterTemplate, Material, Section
from mailing.sanitise import clean_html

from .support import ROOT, csrf_from, issue_row, journal_of, wait_status
from .support.browser import log_in, screenshot

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
HOSTILE = '<p onclick="steal()">Read {{ name }}</p><script>alert(1)</script><img src="https://img.example/a.png" ' \
          'onerror="alert(2)"><a href="javascript:alert(3)">x</a><a href="{{ unsubscribe_url }}">unsubscribe</a>'


def _library():
    news, events = Section(name="News"), Section(name="Events")
    db.session.add_all([news, events])
    db.session.commit()
    made = {}
    for n, (section, title) in enumerate([(news, "Rates go up"), (news, "New office"), (news, "Hiring"),
                                          (events, "Summer fair")]):
        m = materials.save_material(None, {"section_id": section.id, "title": title, "summary": f"About {title}",
                                           "body_html": f"<p>Body of {title}</p>", "link": f"https://ex.example/{n}",
                                           "published_at": f"2026-11-{10 + n:02d}"}, None)
        made[title] = m.id
    return news, events, made


def test_the_sanitiser_keeps_letters_and_drops_what_could_run():
    cleaned = clean_html(HOSTILE)
    assert "<script" not in cleaned and "onerror" not in cleaned and "onclick" not in cleaned
    assert "javascript:" not in cleaned
    assert "{{ name }}" in cleaned and 'href="{{ unsubscribe_url }}"' in cleaned, "placeholders survive"
    assert '<img src="https://img.example/a.png">' in cleaned
    kept = clean_html('<table style="width:100%" cellpadding="4"><tr><td style="color:red">x</td></tr></table>')
    assert 'style="width:100%"' in kept and 'style="color:red"' in kept


def test_a_style_cannot_carry_a_script_address_and_plain_styles_stay():
    for bad in ("background:url(javascript:alert(1))", "background:url(JaVaScRiPt :alert(1))",
                "width: expression(alert(1))", "background:url(\\6a avascript:alert(1))",
                "background:url(java&#115;cript:alert(1))"):
        assert clean_html(f'<div style="{bad}">x</div>') == "<div>x</div>", bad
    kept = '<div style="background:url(https://img.example/bg.png); color:#333">x</div>'
    assert clean_html(kept) == kept


def test_a_letter_shows_summaries_with_read_more_and_a_body_only_without_a_page(ctx):
    news, _events, made = _library()
    own = materials.save_material(None, {"section_id": news.id, "title": "No page", "summary": "Short",
                                         "body_html": "<p>The whole <b>story</b></p>"}, None)
    plain = db.session.scalar(sa.select(LetterTemplate).where(LetterTemplate.name == "Plain"))
    html = materials.render(plain, [db.session.get(Material, made["Hiring"]), own])
    assert '<a href="https://ex.example/2">Hiring</a>' in html and "About Hiring" in html
    assert '<a href="https://ex.example/2">Read more</a>' in html
    assert "Body of Hiring" not in html, "a material with its own page is summed up, not copied whole"
    assert "<p>The whole <b>story</b></p>" in html, "one without a page brings its body"
    assert 'href="{{ unsubscribe_url }}"' in html


def test_search_is_case_blind_and_takes_percent_literally(ctx):
    news, _events, made = _library()
    materials.save_material(None, {"section_id": news.id, "title": "Rates up 5%", "summary": ""}, None)
    assert [m.title for m in materials.search("RATES")] == ["Rates up 5%", "Rates go up"]
    assert [m.title for m in materials.search("5%")] == ["Rates up 5%"]
    assert [m.title for m in materials.search("about summer")] == ["Summer fair"], "the summary is searched"
    assert [m.title for m in materials.search("", news.id)] == ["Rates up 5%", "Hiring", "New office", "Rates go up"]


def test_sections_are_renamed_and_only_an_empty_one_is_deleted(ctx, client, login):
    news, events, _made = _library()
    empty = materials.add_section("Old")
    login("support")
    page = client.get("/materials")
    token = csrf_from(page.data)
    assert client.post(f"/materials/sections/{empty.id}", data={"csrf_token": token, "name": "x"}).status_code == 403
    assert client.post(f"/materials/sections/{empty.id}/delete", data={"csrf_token": token}).status_code == 403
    login("editor")
    page = client.get("/materials")
    token = csrf_from(page.data)
    assert f'id="section-{news.id}"' in page.text
    r = client.post(f"/materials/sections/{news.id}", data={"csrf_token": token, "name": "events"})
    assert r.status_code == 400 and "A section with this name exists." in r.text
    r = client.post(f"/materials/sections/{news.id}", data={"csrf_token": token, "name": "Company news"})
    assert r.status_code == 303
    r = client.post(f"/materials/sections/{events.id}/delete", data={"csrf_token": token})
    assert r.status_code == 400 and "still has materials" in r.text
    assert client.post(f"/materials/sections/{empty.id}/delete", data={"csrf_token": token}).status_code == 303
    assert client.post("/materials/sections/99999/delete", data={"csrf_token": token}).status_code == 404
    db.session.expire_all()
    assert [s.name for s in materials.sections()] == ["Company news", "Events"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Material)) == 4, "no material was lost"


def test_the_assemble_page_of_a_sent_issue_answers_409(ctx, client, login, make_issue, smtp, workers):
    issue_id = make_issue(1)
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, _editor())
    wait_status(issue_id, "sent", 60)
    login("editor")
    assert client.get(f"/issues/{issue_id}/assemble").status_code == 409
    assert "Assemble from materials" not in client.get(f"/issues/{issue_id}").text


def test_templates_accept_the_block_however_spaced(ctx):
    plain = db.session.scalar(sa.select(LetterTemplate).where(LetterTemplate.name == "Plain"))
    mine = materials.copy_template(plain, "Tight")
    materials.save_template(mine, "Tight", "<p>Hi {{name}}</p>{{materials}}")
    assert db.session.get(LetterTemplate, mine.id).html == "<p>Hi {{name}}</p>{{ materials }}"


def test_assemble_remove_one_add_one_edit_and_send(ctx, client, login, make_issue, smtp, workers):
    news, events, made = _library()
    issue_id = make_issue(3)
    db.session.get(Issue, issue_id).sections = [news]
    db.session.commit()
    login("editor")
    page = client.get(f"/issues/{issue_id}/assemble")
    assert page.status_code == 200
    for title in ("Rates go up", "New office", "Hiring"):
        assert title in page.text, "the section's recent materials are offered"
    assert "Summer fair" not in page.text
    found = client.post(f"/issues/{issue_id}/assemble", data={
        "csrf_token": csrf_from(page.data), "section": str(news.id), "q": "fair",
        "material": [str(made["Rates go up"]), str(made["Hiring"])]})
    assert "Summer fair" in found.text, "found in another section"
    framed = db.session.scalar(sa.select(LetterTemplate.id).where(LetterTemplate.name == "Header and footer"))
    r = client.post(f"/issues/{issue_id}/assemble", data={
        "csrf_token": csrf_from(page.data), "section": str(news.id), "template": str(framed), "go": "1"})
    assert r.status_code == 400 and 'role="alert">Choose at least one material.' in r.text
    assert issue_row(issue_id).body_html != "" and not journal_of(issue_id), "nothing changed"
    r = client.post(f"/issues/{issue_id}/assemble", data={
        "csrf_token": csrf_from(page.data), "section": str(news.id), "template": str(framed), "go": "1",
        "material": [str(made["Rates go up"]), str(made["Hiring"]), str(made["Summer fair"])]})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/issues/{issue_id}/edit")
    body = db.session.get(Issue, issue_id).body_html
    db.session.commit()
    assert "Rates go up" in body and "Summer fair" in body and "Hiring" in body
    assert "New office" not in body, "the unticked one is left out"
    assert "Newsletter" in body and "{{ unsubscribe_url }}" in body
    assert [e.details for e in journal_of(issue_id) if e.event == "assemble"][-1] == {
        "materials": 3, "template": "Header and footer"}

    # Corrected in the editor, then sent.
    edit = client.get(f"/issues/{issue_id}/edit")
    issue = db.session.get(Issue, issue_id)
    r = client.post(f"/issues/{issue_id}/edit", data={
        "csrf_token": csrf_from(edit.data), "subject": "November news", "sender_id": str(issue.sender_id),
        "list_id": str(issue.list_id), "body_html": body.replace("Hiring", "We are hiring") + HOSTILE,
        "spread": "none", "kind": "issue"})
    assert r.status_code == 302, r.text
    saved = issue_row(issue_id).body_html
    assert "<script" not in saved and "onerror" not in saved, "the form's HTML is sanitised on save"
    workers.start(1, SEND_JOBS="1")
    lifecycle.launch(issue_id, _editor())
    wait_status(issue_id, "sent", 60)
    raw = smtp.handler.letters[0][1]
    html = email.message_from_bytes(raw, policy=email.policy.default).get_body(("html",)).get_content()
    assert "We are hiring" in html and "Summer fair" in html and "New office" not in html
    assert "<script" not in html and "/u/" in html, "the unsubscribe link was filled in"


def _send(api, method, path, **kw):
    """PATCH and DELETE through the API test client's token."""
    return api.client.open("/api/v1" + path, method=method, headers=api.headers, **kw)


def _editor():
    from mailing.cli import create_user

    return create_user("assembler@test.local", "editor", "pw-editor-123")[0]


def test_templates_need_a_materials_block_and_shipped_ones_stay(ctx, client, login):
    login("editor")
    page = client.get("/templates")
    plain = db.session.scalar(sa.select(LetterTemplate).where(LetterTemplate.name == "Plain"))
    r = client.post(f"/templates/{plain.id}/copy", data={"csrf_token": csrf_from(page.data), "name": "Mine"})
    assert r.status_code == 303
    mine = db.session.scalar(sa.select(LetterTemplate).where(LetterTemplate.name == "Mine"))
    edit = client.get(f"/templates/{mine.id}/edit")
    r = client.post(f"/templates/{mine.id}/edit", data={"csrf_token": csrf_from(edit.data), "name": "Mine",
                                                        "html": "<p>No block here</p>"})
    assert r.status_code == 400 and "{{ materials }}" in r.text
    r = client.post(f"/templates/{mine.id}/edit", data={"csrf_token": csrf_from(edit.data), "name": "Mine",
                                                        "html": "<p>{{ nmae }}</p>{{ materials }}"})
    assert r.status_code == 400 and "nmae" in r.text, "a typo in a placeholder is caught here"
    for reach in ("{{ config }}", "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                  "{% for x in range(9) %}x{% endfor %}"):
        r = client.post(f"/templates/{mine.id}/edit", data={"csrf_token": csrf_from(edit.data), "name": "Mine",
                                                            "html": f"<p>{reach}</p>{{{{ materials }}}}"})
        assert r.status_code == 400, reach
    # Nor is a template ever run: what it says outside its placeholders stays text.
    probe = LetterTemplate(name="Probe", html="{% for x in range(3) %}{{ materials }}{% endfor %}")
    assert materials.render(probe, []) == "{% for x in range(3) %}{% endfor %}"
    r = client.post(f"/templates/{mine.id}/edit", data={"csrf_token": csrf_from(edit.data), "name": "Mine",
                                                        "html": "<h1 onclick='x()'>Hi</h1>{{ materials }}<script>1</script>"})
    assert r.status_code == 303
    db.session.expire_all()
    assert db.session.get(LetterTemplate, mine.id).html == "<h1>Hi</h1>{{ materials }}"
    with pytest.raises(materials.MaterialError):
        materials.save_template(plain, "Plain", "<p>x</p>{{ materials }}")
    db.session.rollback()


def test_roles_bad_input_and_non_drafts(ctx, client, login, api_client, make_issue):
    news, _events, made = _library()
    support = api_client("support")
    assert support.get("/materials").status_code == 200
    assert support.post("/materials", json={"section_id": news.id, "title": "x"}).status_code == 403
    editor = api_client("editor")
    r = editor.post("/materials", json={"section_id": news.id, "title": "API piece", "body_html": HOSTILE,
                                        "link": "https://ex.example/api"})
    assert r.status_code == 201 and "<script" not in r.json["body_html"] and "onerror" not in r.json["body_html"]
    for bad, field in (({"section_id": 999, "title": "x"}, "section_id"), ({"section_id": news.id}, "title"),
                       ({"section_id": news.id, "title": "x", "link": "javascript:alert(1)"}, "link"),
                       ({"section_id": news.id, "title": "x", "published_at": "soon"}, "published_at"),
                       ({"section_id": news.id, "title": "x", "published_at": 20261110}, "published_at"),
                       ({"section_id": news.id, "title": ["x"]}, "title"), ({"section_id": True, "title": "x"},
                                                                           "section_id")):
        r = editor.post("/materials", json=bad)
        assert r.status_code == 400 and r.json["error"] == field, (bad, r.json)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Material)) == 5
    assert editor.get("/materials/99999").status_code == 404
    assert editor.get("/materials?q=rates").json["materials"][0]["title"] == "Rates go up"
    issue_id = make_issue(1)
    plain = db.session.scalar(sa.select(LetterTemplate.id).where(LetterTemplate.name == "Plain"))
    r = editor.post(f"/issues/{issue_id}/assemble", json={"material_ids": [made["Hiring"]], "template_id": plain})
    assert r.status_code == 200 and "Hiring" in r.json["body_html"]
    assert editor.post(f"/issues/{issue_id}/assemble", json={"material_ids": [], "template_id": plain}
                       ).status_code == 400
    assert editor.post(f"/issues/{issue_id}/assemble", json={"material_ids": [99999], "template_id": plain}
                       ).json["error"] == "material_ids"
    r = _send(editor, "PATCH", f"/materials/{made['Hiring']}", json={"body_html": HOSTILE})
    assert r.status_code == 200 and "onerror" not in r.json["body_html"] and "{{ name }}" in r.json["body_html"]
    r = _send(editor, "PATCH", f"/materials/{made['Hiring']}", json={"title": "Changed", "link": "javascript:alert(1)"})
    assert r.status_code == 400 and r.json["error"] == "link"
    assert editor.get(f"/materials/{made['Hiring']}").json["title"] == "Hiring", "nothing changed"
    assert _send(support, "PATCH", f"/materials/{made['Hiring']}", json={"title": "x"}).status_code == 403
    assert _send(support, "DELETE", f"/materials/{made['Hiring']}").status_code == 403
    assert _send(editor, "PATCH", "/materials/99999", json={"title": "x"}).status_code == 404
    r = _send(editor, "PATCH", f"/materials/{made['Hiring']}", json={"published_at": "2026-11-20T01:30:00+03:00"})
    assert r.json["published_at"] == "2026-11-19T22:30:00Z", "a time with its zone is kept in UTC"
    assert [s["name"] for s in support.get("/sections").json["sections"]] == ["Events", "News"]
    assert {"Plain", "Header and footer"} <= {t["name"] for t in support.get("/templates").json["templates"]}
    assert support.post(f"/issues/{issue_id}/assemble", json={"material_ids": [made["Hiring"]],
                                                             "template_id": plain}).status_code == 403
    assert editor.post("/issues/99999/assemble", json={"material_ids": [made["Hiring"]],
                                                       "template_id": plain}).status_code == 404
    lifecycle.launch(issue_id, _editor())
    r = editor.post(f"/issues/{issue_id}/assemble", json={"material_ids": [made["Hiring"]], "template_id": plain})
    assert r.status_code == 409, "only a draft is assembled"
    assert _send(editor, "DELETE", f"/materials/{made['Hiring']}").status_code == 204
    assert editor.get(f"/materials/{made['Hiring']}").status_code == 404
    login("support")
    assert client.get("/materials").status_code == 200
    page = client.get("/materials")
    assert client.post("/materials", data={"csrf_token": csrf_from(page.data), "title": "x"}).status_code == 403
    login("editor")
    page = client.get("/materials")
    r = client.post("/materials", data={"csrf_token": csrf_from(page.data), "section_id": str(news.id),
                                        "title": "", "link": "ftp://x"})
    assert r.status_code == 400 and "This is required." in r.text


# Every visible field of a page has a name a screen reader says (a <label> or aria-label).
UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.outerHTML)"""


@pytest.mark.browser
def test_assembling_in_the_browser_by_keyboard_on_a_phone(ctx, make_user, make_issue, browser, web):
    _news, _events, made = _library()
    issue_id = make_issue(2)
    news = db.session.scalar(sa.select(Section).where(Section.name == "News"))
    db.session.get(Issue, issue_id).sections = [news]
    db.session.commit()
    user, pw = make_user("editor")
    # A phone's width; the page's Content-Security-Policy would refuse the injected axe script.
    page = browser.new_page(viewport={"width": 390, "height": 800}, bypass_csp=True)
    log_in(page, web, user.email, pw)
    for path in ("/materials", "/templates", f"/materials/{made['Hiring']}/edit"):
        page.goto(web + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        assert page.evaluate(UNLABELLED) == [], path
        screenshot(page, "materials-390" + path.replace("/", "-"))
    page.goto(f"{web}/issues/{issue_id}")
    page.click("a.assemble-link")
    page.wait_for_url(f"{web}/issues/{issue_id}/assemble")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate(UNLABELLED) == []
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    assert [v["id"] for v in violations if v["impact"] in ("serious", "critical")] == []
    assert page.get_by_label("Rates go up").is_checked() and page.get_by_label("New office").is_checked()
    # Keyboard only: Space unticks, typing and Enter searches, Space ticks the one found.
    page.get_by_label("New office").focus()
    page.keyboard.press("Space")
    page.get_by_label("Find", exact=True).focus()
    page.keyboard.type("fair")
    page.keyboard.press("Enter")
    page.wait_for_selector("label.found-choice")
    assert not page.get_by_label("New office").is_checked(), "the untick is kept across the search"
    page.get_by_label("Summer fair").focus()
    page.keyboard.press("Space")
    page.get_by_label("Template").focus()
    page.keyboard.press("End")  # the last template: "Plain" (shipped ones come first, by name)
    assert page.locator("select[name=template] option:checked").inner_text() == "Plain"
    screenshot(page, "assemble-from-materials-390")
    page.locator("button[name=go]").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{web}/issues/{issue_id}/edit")
    body = page.input_value("textarea[name=body_html]")
    assert "Summer fair" in body and "Rates go up" in body and "Hiring" in body
    assert "New office" not in body and made["New office"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
