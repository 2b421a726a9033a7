"""What profile-store and the Python participant keep of each user after the sign-ins, the refresh and the erasures."""
import json

import pytest

from lethe_demo.scenario import profile_row
from lethe_demo.tenants import USER_LABELS


@pytest.mark.parametrize("label", USER_LABELS)
def test_profile_store_files_the_profile_under_the_id_tokens_user_id(scenario, label):
    user = scenario.user(label)
    row = next(r for r in scenario.rows_before[user.tenant.id] if r.get("accountId") == user.account_id)
    assert row.get("platformUserId") == user.user_id, \
        f"platformUserId {row.get('platformUserId')}, ID token sub {user.user_id}"


def test_the_updated_profile_is_refreshed_in_profile_store(scenario):
    for user in scenario.users:
        if user.updated_name:
            row = next(r for r in scenario.rows_after[user.tenant.id] if r.get("accountId") == user.account_id)
            before = next(r for r in scenario.rows_before[user.tenant.id] if r.get("accountId") == user.account_id)
            assert row.get("name") == user.updated_name and row.get("fetchedAt") != before.get("fetchedAt"), \
                f"before {json.dumps(before)}, after {json.dumps(row)}"


@pytest.mark.parametrize("label", USER_LABELS)
def test_profile_store_row_follows_the_tenants_policy(scenario, label):
    user = scenario.user(label)
    row = profile_row(scenario.rows_after[user.tenant.id], user)
    if not user.closed:
        assert row is not None and row.get("email") == user.email, "not closed: keeps its profile"
    elif user.tenant.policy == "delete":
        assert row is None, "closed, policy delete: the row is still present"
    else:
        assert row is not None and all(row.get(f) is None for f in
                                       ("name", "email", "nickname", "picture", "accountId")), \
            f"closed, policy scrub: the row stays under its user, name/email/nickname/picture and the accountId " \
            f"null; row {json.dumps(row)}"


@pytest.fixture(scope="module")
def participant_contacts(scenario):
    """The Python participant's contacts by accountId, and those without one by platform user."""
    by_account, by_user = {}, {}
    for tenant_id, account_id, user_id, name, email in scenario.participant_rows(with_user=True):
        by_account.setdefault(account_id, []).append((tenant_id, name, email))
        if account_id is None:
            by_user.setdefault(user_id, []).append((tenant_id, name, email))
    return by_account, by_user


@pytest.mark.parametrize("label", USER_LABELS)
def test_python_participant_contact_follows_the_tenants_policy(scenario, participant_contacts, label):
    user = scenario.user(label)
    by_account, by_user = participant_contacts
    held = by_account.get(user.account_id, [])
    if not user.closed:
        # It follows the gateway's refresh after `updated` too (a newer ProfileFetched).
        ok = len(held) == 1 and held[0][1] == (user.updated_name or user.name)
        expectation = "keeps its contact" + (" with the refreshed name" if user.updated_name else "")
    elif user.tenant.policy == "delete":
        ok = not held
        expectation = "contact deleted"
    else:
        # Closed: its accountId goes under every policy; the scrubbed row stays under the platform user.
        unlinked = by_user.get(user.user_id, [])
        ok = not held and len(unlinked) == 1 and unlinked[0][1] is None and unlinked[0][2] is None
        expectation = "contact kept under its user, name/email and the accountId null"
    assert ok, f"{expectation}: {len(held)} rows under its accountId"
