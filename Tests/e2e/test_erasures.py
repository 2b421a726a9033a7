"""erasure-executor: one erasure per closed account, carried out by every participant under the tenant's policy, and a
verified audit chain."""
import json

import pytest

from billing_participant import NAME as BILLING
from lethe_demo.system import PARTICIPANT
from lethe_demo.tenants import TENANT_IDS

# e2e-billing (billing_participant.py) is declared by the suite; it fails acme's erasure once (test_console.py).
PARTICIPANTS = ["profile-store", "oauth-gateway", PARTICIPANT, BILLING]
EXPECTED_OUTCOME = {"delete": "erased", "scrub": "scrubbed", "disassociate": "disassociated"}


def erasures_of(scenario, tenant_id):
    return [record for record in scenario.erasures if record.get("tenantId") == tenant_id]


def test_exactly_one_erasure_per_closed_account_all_completed(scenario):
    completed = [r for r in scenario.erasures if r.get("status") == "completed"]
    assert len(scenario.erasures) == len(completed) == sum(1 for u in scenario.users if u.closed), \
        f"{[(r.get('tenantId'), r.get('cause'), r.get('status')) for r in scenario.erasures]}"


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_the_erasure_has_the_tenants_policy_cause_atlassian_closed_and_its_app(scenario, tenant_id):
    tenant = scenario.tenant(tenant_id)
    for record in erasures_of(scenario, tenant_id):
        assert (record.get("policy") == tenant.policy and record.get("cause") == "atlassian-closed"
                and record.get("appId") == tenant.app_id), json.dumps(record)


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_the_erasure_no_longer_shows_the_raw_account_id_only_the_hmac_subject(scenario, tenant_id):
    for record in erasures_of(scenario, tenant_id):
        assert record.get("accountId") is None and bool(record.get("subject")), json.dumps(record)


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_every_participant_acknowledged_the_policys_outcome(scenario, tenant_id):
    expected = {name: EXPECTED_OUTCOME[scenario.tenant(tenant_id).policy] for name in PARTICIPANTS}
    for record in erasures_of(scenario, tenant_id):
        outcomes = {p.get("participant"): p.get("outcome") for p in record.get("participants", [])}
        assert outcomes == expected, f"erasure {record.get('id')}"


def test_audit_verify_is_ok_and_covers_the_erasures(scenario):
    audit = scenario.audit or {}
    completed = sum(1 for r in scenario.erasures if r.get("status") == "completed")
    assert audit.get("ok") is True and (audit.get("entries") or 0) >= completed, f"answer {json.dumps(audit)}"
