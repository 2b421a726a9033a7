"""oauth-gateway: tenant apps, tenant isolation, the sign-in flow's refusals."""
import json
import urllib.parse

import pytest

from lethe_demo.http_client import http
from lethe_demo.tenants import TENANT_IDS



@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_every_app_requests_report_personal_data(scenario, tenant_id):
    # acme names only read:me and offline_access: the gateway adds report:personal-data all the same, or Atlassian
    # could refuse every PDR call made with its users' tokens.
    app_view = scenario.tenant(tenant_id).app_view
    assert "report:personal-data" in (app_view.get("scopes") or []), json.dumps(app_view)


def test_another_tenants_token_gets_404_on_a_tenant_route(scenario, system):
    other = http("GET", f"{system.gateway}/v1/tenants/{scenario.acme.id}", headers=scenario.globex.auth())
    assert other.status == 404, other.brief()


def test_an_unlisted_redirect_uri_answers_400_without_redirect(scenario, system):
    query = urllib.parse.urlencode({"redirect_uri": "http://127.0.0.1:9/not-listed", "state": "x"})
    unlisted = http("GET", f"{system.gateway}/v1/tenants/{scenario.acme.id}/signin/atlassian?{query}")
    assert unlisted.status == 400 and not unlisted.header("location"), unlisted.brief()


def test_wrong_client_credentials_answer_401_invalid_client(scenario, system):
    wrong = http("POST", system.gateway + "/oauth/token", form={
        "grant_type": "client_credentials", "client_id": scenario.acme.id, "client_secret": "wrong-secret"})
    assert wrong.status == 401 and b"invalid_client" in wrong.body, wrong.brief()


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_a_replayed_callback_answers_400_state_already_consumed(played, tenant_id):
    replay = played.callback_replays[tenant_id]
    assert replay.status == 400 and not replay.header("location"), replay.brief()
