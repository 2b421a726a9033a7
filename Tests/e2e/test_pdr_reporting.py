"""pdr-reporter, as Atlassian sees it (the sandbox's call log of two cycles) and as its own app status shows it."""
import json
from datetime import datetime

import pytest

from lethe_demo.tenants import TENANT_IDS



def calls_of(scenario, tenant_id):
    """The app's calls (each tenant has its own app in this scenario: acme its own, globex the shared one) and the
    accounts each held by it."""
    app = scenario.tenant(tenant_id).app_id
    held = {user.account_id for user in scenario.users if user.tenant.app_id == app}
    return [call for call in scenario.calls if call.get("clientId") == app], held


def report_times(calls):
    """accountId → when each call reported it."""
    seen = {}
    for call in calls:
        for account in call.get("accounts", []):
            seen.setdefault(account["accountId"], []).append(
                datetime.fromisoformat(call["time"].replace("Z", "+00:00")))
    return seen


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_pdr_reporter_shows_reporting_health_ok(scenario, tenant_id):
    status = scenario.app_status.get(scenario.tenant(tenant_id).app_id, {})
    assert status.get("health", {}).get("state") == "ok", json.dumps(status)


def test_every_active_account_is_reported_again_in_the_second_cycle(played):
    assert not played.not_reported_again, f"not reported a second time: {played.not_reported_again}"


def test_every_pdr_request_carries_1_to_90_accounts(scenario):
    assert all(1 <= len(call.get("accounts", [])) <= 90 for call in scenario.calls), \
        f"sizes {[len(c.get('accounts', [])) for c in scenario.calls]}"


def test_every_pdr_request_used_a_valid_app_token_and_was_answered_200_or_204(scenario):
    refused = [(c.get("sequence"), c.get("clientId"), c.get("status"), c.get("fault")) for c in scenario.calls
               if c.get("status") not in (200, 204) or not c.get("clientId")]
    assert not refused


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_no_account_twice_in_one_request(scenario, tenant_id):
    calls, _held = calls_of(scenario, tenant_id)
    for call in calls:
        ids = [account["accountId"] for account in call.get("accounts", [])]
        assert len(ids) == len(set(ids)), f"call {call.get('sequence')}"


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_every_account_the_app_holds_was_reported(scenario, tenant_id):
    calls, held = calls_of(scenario, tenant_id)
    never = held - set(report_times(calls))
    assert not never, f"{len(never)} never reported"


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_only_the_apps_own_accounts_were_reported_with_its_token(scenario, tenant_id):
    calls, held = calls_of(scenario, tenant_id)
    foreign = set(report_times(calls)) - held
    assert not foreign, f"{len(foreign)} foreign accounts"


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_a_closed_erased_account_is_reported_once_and_not_in_the_next_cycle(scenario, tenant_id):
    calls, _held = calls_of(scenario, tenant_id)
    seen = report_times(calls)
    app = scenario.tenant(tenant_id).app_id
    for user in scenario.users:
        if user.closed and user.tenant.app_id == app:
            assert len(seen.get(user.account_id, [])) == 1, \
                f"{user.label} reported {len(seen.get(user.account_id, []))} times"


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_each_account_is_reported_once_per_cycle(scenario, tenant_id):
    calls, _held = calls_of(scenario, tenant_id)
    least = scenario.system.cycle * 0.9
    early = []
    for account, times in report_times(calls).items():
        times.sort()
        early += [(account, (b - a).total_seconds()) for a, b in zip(times, times[1:])
                  if (b - a).total_seconds() < least]
    assert not early, f"reports less than {least:.0f} s apart: {early}"
