"""oauth-gateway as a Shared Signals transmitter, seen from a tenant's receiver written with joserfc: every SET it was
pushed verifies from the discovery document and the JWKS alone; each closed user's erasure reaches the user's tenant
as account-disabled then account-purged, although the receiver refused them with 500s and the gateway was restarted
while they were queued; nothing in a SET names the person."""
import json

import pytest

from lethe_demo.tenants import TENANT_IDS
from ssf_receiver import DISABLED, PROFILE_CHANGED, PURGED, USER_EVENTS, VERIFICATION, Verifier, authorization_for


@pytest.fixture(scope="module")
def verifier(system):
    return Verifier(system.gateway)


@pytest.fixture(scope="module")
def ssf(played):
    return played.ssf


def verified(ssf, verifier, tenant_id, accepted_only=True):
    """(push, claims) of every SET pushed to the tenant's endpoint, in arrival order, each verified."""
    return [(push, verifier.verify(push.token, tenant_id)) for push in ssf.receiver.received(tenant_id)
            if push.status == 202 or not accepted_only]


def event_of(claims):
    (uri, payload), = claims["events"].items()
    return uri, payload


def test_every_set_pushed_verifies_from_discovery_and_jwks(ssf, verifier):
    pushes = ssf.receiver.received()
    # verify() raises unless signature, typ, iss and aud (the endpoint's tenant) hold.
    checked = sum(len(verified(ssf, verifier, tenant_id, accepted_only=False)) for tenant_id in TENANT_IDS)
    assert pushes and checked == len(pushes)


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_every_push_carries_the_tenants_own_authorization_header(ssf, tenant_id):
    pushes = ssf.receiver.received(tenant_id)
    assert pushes and all(push.authorization == authorization_for(tenant_id) for push in pushes)


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_the_verification_event_carries_the_state_the_tenant_sent(ssf, verifier, tenant_id):
    events = [(uri, payload, claims) for _, claims in verified(ssf, verifier, tenant_id)
              for uri, payload in [event_of(claims)] if uri == VERIFICATION]
    assert [payload.get("state") for _, payload, _ in events] == [f"hello-{tenant_id}"]
    stream_id = ssf.streams[tenant_id]["stream_id"]
    assert events[0][2]["sub_id"] == {"format": "opaque", "id": stream_id}


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_each_closed_user_is_disabled_then_purged_once_under_their_sub(scenario, ssf, verifier, tenant_id):
    tenant = scenario.tenant(tenant_id)
    erasure_ids = {record.get("id") for record in scenario.erasures if record.get("tenantId") == tenant_id}
    by_jti = {}  # at least once: a copy whose 2xx was lost may come again, with the same jti
    for _, claims in verified(ssf, verifier, tenant_id):
        by_jti.setdefault(claims["jti"], claims)
    user_events = [claims for claims in by_jti.values() if event_of(claims)[0] in USER_EVENTS]
    for user in tenant.users:
        subject = {"format": "iss_sub", "iss": verifier.issuer, "sub": user.user_id}
        mine = [claims for claims in user_events if claims["sub_id"] == subject]
        if not user.closed:
            assert mine == [], f"{user.label} was not erased, yet got {[event_of(c)[0] for c in mine]}"
            continue
        assert [event_of(claims)[0] for claims in mine] == [DISABLED, PURGED], user.label
        disabled, purged = (event_of(claims)[1] for claims in mine)
        assert mine[0]["txn"] == mine[1]["txn"] and mine[0]["txn"] in erasure_ids, user.label
        for payload in (disabled, purged):
            assert payload.get("policy") == tenant.policy and payload.get("cause") == "atlassian-closed", payload
        assert disabled["event_timestamp"] <= purged["event_timestamp"]
    assert len(user_events) == 2 * sum(1 for user in tenant.users if user.closed)


@pytest.mark.parametrize("tenant_id", TENANT_IDS)
def test_the_user_atlassian_updated_gets_profile_changed_naming_the_field_only(scenario, ssf, verifier, tenant_id):
    tenant = scenario.tenant(tenant_id)
    changed = {}
    for _, claims in verified(ssf, verifier, tenant_id):
        uri, payload = event_of(claims)
        if uri == PROFILE_CHANGED:
            changed.setdefault(claims["sub_id"]["sub"], set()).add(tuple(payload.get("changed_fields") or ["?"]))
    expected = {user.user_id: {("name",)} for user in tenant.users if user.updated_name}
    assert changed == expected, f"{tenant_id}: {changed}"


def test_user_events_were_refused_then_delivered_after_the_gateway_restart(ssf, verifier):
    assert ssf.restarted and ssf.refused_before_restart >= 1
    pushes = ssf.receiver.received()
    refused = [verifier.verify(push.token, push.tenant_id) for push in pushes if push.status != 202]
    accepted_jtis = {verifier.verify(push.token, push.tenant_id)["jti"] for push in pushes if push.status == 202}
    # Every refused event came again and was taken: the same event (its jti), not a new one.
    lost = [(event_of(claims)[0], claims["jti"]) for claims in refused
            if event_of(claims)[0] not in USER_EVENTS or claims["jti"] not in accepted_jtis]
    assert refused and lost == []


def test_no_set_names_the_person(scenario, ssf):
    named = [(push.tenant_id, user.label) for push in ssf.receiver.received()
             for text in [json.dumps(push.unverified_claims())] for user in scenario.users
             if any(value in text for value in (user.account_id, user.email, user.name, user.nickname))]
    assert ssf.receiver.received() and named == [], f"SETs (to tenant, naming user): {named}"
