"""The operator console (operator-console), as the run's browser part saw it (console_run.py): the sign-in gate, the
figures of the overview against the services' APIs, and the Retry of the erasure e2e-billing failed, which then
completed. Its screenshots are in <run folder>/screenshots/."""
import json
import os

import pytest

from billing_participant import NAME as BILLING
from console_run import FIGURES
from lethe_demo.http_client import http


@pytest.fixture(scope="module")
def console(played):
    return played.console


def test_the_browser_part_ran_without_error(console):
    assert console.done and console.error is None and not console.retried_by_api, console.error


@pytest.mark.parametrize("figure", FIGURES)
def test_the_overview_shows_what_the_apis_say(console, figure):
    before, shown, after = console.figures.get(figure, (None, "missing", None))
    assert shown in (before, after), f"{figure}: console {shown!r}, APIs {before!r} before and {after!r} after"


def test_the_erasure_billing_failed_needed_attention_then_completed_after_retry(played, console):
    billing = played.billing
    assert billing.error is None, billing.error
    answered = [outcome for erasure_id, _, outcome in billing.answers if erasure_id == console.erasure_id]
    assert answered[:1] == ["failed"] and answered[-1:] == ["erased"], answered
    assert console.flash_after_retry and "Sent again" in console.flash_after_retry
    assert console.status_after_retry == "completed"
    assert console.participant_outcomes.get(BILLING) == "erased", console.participant_outcomes


def test_the_audit_export_downloads_every_entry_as_json_lines(console):
    status, disposition, lines, (before, after) = console.export
    assert status == 200 and disposition.startswith("attachment;"), (status, disposition)
    parsed = [json.loads(line) for line in lines]
    # An erasure may complete while it downloads: as many entries as the audit had before, or after.
    assert before <= len(parsed) <= after and all("entryHash" in entry for entry in parsed), (len(parsed), before, after)


def test_screenshots_were_saved(console):
    assert len(console.shots) == 3 and all(os.path.getsize(path) > 10_000 for path in console.shots), console.shots


def test_every_page_but_sign_in_needs_a_session(system):
    console = system.url("operator-console")
    for method, path in (("GET", "/"), ("GET", "/erasures/x"), ("GET", "/audit/export")):
        answer = http(method, console + path)
        assert answer.status == 303 and answer.header("location") == "/login", f"{method} {path}: {answer.brief()}"
    answer = http("POST", console + "/erasures/x/retry", form={"csrf": "forged"})
    assert answer.status == 403, answer.brief()


def test_a_wrong_token_does_not_sign_in(system):
    answer = http("POST", system.url("operator-console") + "/login", form={"token": "not-the-operator-token"})
    assert answer.status == 401 and answer.header("set-cookie") is None, answer.brief()

