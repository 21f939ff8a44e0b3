"""The OpenAPI document is valid OpenAPI 3.1, and schemathesis, driving the live API served
by gunicorn with requests generated from that document, finds no server error, no answer
outside the document (status, content type, body schema), no invalid input accepted and no
operation that works without a token."""

import json
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate

from mailing import settings
from mailing.extensions import db
from mailing.models import ApiToken
from mailing.views.api import token_hash


def test_the_document_is_valid_openapi_3_1_and_covers_every_api_route(client, app):
    spec = client.get("/api/v1/openapi.json").json
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api.") and rule.endpoint != "api.openapi":
            path = rule.rule.replace("<int:", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                operation = spec["paths"][path][method.lower()]
                assert operation["summary"] and operation["responses"], (method, path)
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)


def test_schemathesis_finds_nothing_against_the_live_api(ctx, web, make_issue, make_user, tmp_path):
    for n in (3, 1):  # something for the generated ids to find
        make_issue(n)
    user, _ = make_user("admin")
    db.session.add(ApiToken(user_id=user.id, name="schemathesis", token_hash=token_hash("obx_schemathesis")))
    settings.put("api_requests_per_minute", 0)
    db.session.commit()
    report = tmp_path / "report"
    # A body over MAX_REQUEST_BYTES is refused with 413 before it is read, and a URL over
    # the web server's limit with 414: rejections too.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.negative_data_rejection]\nexpected-statuses = ["400", "401", "403", "404", '
                      '"405", "406", "409", "413", "414", "415", "422", "428", "429"]\n')
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
         "run", f"{web}/api/v1/openapi.json",
         "--url", web, "-H", "Authorization: Bearer obx_schemathesis",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--phases", "examples,coverage,fuzzing", "--max-examples", "15", "--seed", "1",
         "--workers", "2", "--request-timeout", "20", "--report", "ndjson", "--report-dir", str(report),
         "--no-color"],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "operations" in run.stdout.lower() and json  # the summary was printed
