"""The issue-8 scenario through public interfaces only: two tenants, six sign-ins, two accounts closed and one profile
updated at Atlassian (the sandbox), a PDR cycle, the erasures and the refresh. Its steps fail with Failure when the
system does not do what the next step needs; what the outcome must look like is the end-to-end suite's to assert
(Tests/e2e), and the demo's report shows it."""
import json
import secrets
import sqlite3
import time
import urllib.parse

from .http_client import bearer, expect, http
from .launcher import Failure, say
from .openid import RelyingParty
from .tenants import PERSONAS, Tenant, User

RETURN_URL = "http://127.0.0.1:9/return"


def profile_row(rows, user):
    """The user's row: by accountId, or — scrubbed for a closed account, which drops the accountId too — by the
    platform user it stays filed under."""
    return next((r for r in rows if r.get("accountId") == user.account_id), None) or next(
        (r for r in rows if not r.get("accountId") and r.get("platformUserId") == user.user_id), None)


class Scenario:
    def __init__(self, system):
        self.system = system
        self.acme = Tenant(system, "acme", "delete",
                           {"clientId": "acme-atlassian-app", "clientSecret": "acs-" + secrets.token_urlsafe(18)})
        self.globex = Tenant(system, "globex", "scrub", None)
        self.tenants = [self.acme, self.globex]
        self.sign_ins = 0
        self._relying_parties = {}
        self.rows_before = {}
        self.rows_after = {}
        self.calls = []
        self.erasures = []
        self.audit = None
        self.app_status = {}

    @property
    def users(self):
        return [user for tenant in self.tenants for user in tenant.users]

    def tenant(self, tenant_id):
        return next(tenant for tenant in self.tenants if tenant.id == tenant_id)

    def user(self, label):
        return next(user for user in self.users if user.label == label)

    # -- the whole thing
    def play(self):
        """The demo: everything up to the erasures and the refresh, then what the report shows."""
        self.sign_in_everyone()
        self.close_accounts_and_wait_for_outcomes()
        self.collect_after()

    def sign_in_everyone(self, after_each_sign_in=lambda user: None):
        """The system without pdr-reporter, the sandbox's apps and users, both tenants, every user signed in (then
        after_each_sign_in(user)), and every profile stored by profile-store and the Python participant."""
        self.system.start_all(with_reporter=False)
        self.setup_sandbox()
        self.setup_tenants()
        for user in self.users:
            self.sign_in(user)
            after_each_sign_in(user)
        self.wait_profiles()
        self.wait_participant_contacts()

    def close_accounts_and_wait_for_outcomes(self, while_waiting=lambda: None):
        """Closes and updates accounts at Atlassian, starts pdr-reporter and waits for the erasures and the refresh,
        calling while_waiting() every time it looks (the end-to-end suite restarts a service from there)."""
        self.change_accounts()
        say(f"starting pdr-reporter with PDR_CYCLE_SECONDS={self.system.cycle}")
        self.system.start_services(["pdr-reporter"])
        self.wait_outcomes(while_waiting)

    # -- sandbox
    def sandbox(self, method, path, body=None, statuses=(200, 201)):
        return expect(http(method, self.system.sandbox + path, body=body), statuses, f"sandbox {method} {path}").json()

    def setup_sandbox(self):
        s = self.system
        self.sandbox("POST", "/_sandbox/apps", {**self.acme.own_app, "callbackUrl": s.callback_url})
        self.sandbox("POST", "/_sandbox/apps", {**s.shared_app, "callbackUrl": s.callback_url})
        say(f"sandbox: registered apps {self.acme.app_id} (acme's own) and {s.shared_app['clientId']} (shared), "
            f"callback {s.callback_url}")
        for tenant in self.tenants:
            for index, (first, last) in enumerate(PERSONAS[tenant.id], start=1):
                user = User(tenant, index, first, last)
                created = self.sandbox("POST", "/_sandbox/users", {
                    "accountId": user.account_id, "name": user.name, "email": user.email,
                    "nickname": user.nickname, "picture": user.picture})
                if created.get("accountId") != user.account_id:
                    raise Failure(f"sandbox created {created.get('accountId')!r}, expected {user.account_id}")
                tenant.users.append(user)
        say(f"sandbox: created {len(self.users)} Atlassian users (3 per tenant)")

    # -- gateway
    def setup_tenants(self):
        s = self.system
        admin = bearer(s.admin_token)
        for tenant in self.tenants:
            answer = expect(http("POST", s.gateway + "/v1/tenants", body={"tenantId": tenant.id}, headers=admin),
                            201, f"create tenant {tenant.id} (POST /v1/tenants)")
            body = answer.json()
            if body.get("tenantId") != tenant.id or body.get("clientId") != tenant.id or not body.get("clientSecret"):
                raise Failure(f"POST /v1/tenants {tenant.id}: unexpected answer keys {sorted(body)}")
            tenant.client_id, tenant.client_secret = body["clientId"], body["clientSecret"]
            tenant.token()
            say(f"gateway: tenant {tenant.id} created; tenant token obtained (client credentials)")
        for tenant in self.tenants:
            base = f"{s.gateway}/v1/tenants/{tenant.id}"
            if tenant.own_app:
                app = {**tenant.own_app, "callbackUrl": s.callback_url, "scopes": ["read:me", "offline_access"]}
            else:
                app = {"shared": True}
            view = expect(http("PUT", base + "/app", body=app, headers=tenant.auth()), 200,
                          f"{tenant.id}: PUT /v1/tenants/{tenant.id}/app").json()
            view = expect(http("PUT", base + "/settings", headers=tenant.auth(), body={
                "returnUrls": [RETURN_URL], "erasurePolicy": tenant.policy, "deadlineDays": 30}), 200,
                f"{tenant.id}: PUT /v1/tenants/{tenant.id}/settings").json()
            view = expect(http("GET", base, headers=tenant.auth()), 200, f"{tenant.id}: GET tenant view").json()
            app_view = view.get("app") or {}
            if (app_view.get("appId") != tenant.app_id or bool(app_view.get("shared")) != (tenant.own_app is None)
                    or view.get("erasurePolicy") != tenant.policy or view.get("returnUrls") != [RETURN_URL]):
                raise Failure(f"{tenant.id}: tenant view does not show what was configured: {json.dumps(view)}")
            if "clientSecret" in json.dumps(view):
                raise Failure(f"{tenant.id}: the tenant view shows a secret")
            tenant.app_view = app_view
            kind = "its own app" if tenant.own_app else "the shared app"
            say(f"gateway: {tenant.id} uses {kind} {tenant.app_id}, policy {tenant.policy}, return URL {RETURN_URL}")

    def relying_party(self, tenant):
        """The tenant's OpenID client (discovery and JWKS fetched once per tenant)."""
        if tenant.id not in self._relying_parties:
            self._relying_parties[tenant.id] = RelyingParty(
                self.system.gateway, tenant.client_id, tenant.client_secret, RETURN_URL)
        return self._relying_parties[tenant.id]

    def sign_in(self, user):
        """The user signs in to the tenant through the gateway's OpenID Provider, the browser's hops followed by hand:
        the tenant's authorization request → Atlassian's (the sandbox's) consent → the gateway's callback → the
        tenant's redirect URI with the code; then the tenant's backend redeems it and validates the ID token."""
        s, tenant = self.system, user.tenant
        where = f"sign-in {user.label}"
        party = self.relying_party(tenant)
        session, url, verifier, nonce = party.start()
        step1 = http("GET", url)
        location = self._redirect(step1, f"{where}, step 1 (gateway /oauth/authorize)")
        if not location.startswith(s.sandbox + "/authorize"):
            raise Failure(f"{where}: gateway redirected to {location.split('?')[0]}, expected {s.sandbox}/authorize")
        authorize_query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        if authorize_query.get("client_id") != [tenant.app_id]:
            raise Failure(f"{where}: /authorize for client_id {authorize_query.get('client_id')}, "
                          f"expected {tenant.app_id}")
        step2 = http("GET", location + "&sandbox_user=" + urllib.parse.quote(user.account_id))
        location = self._redirect(step2, f"{where}, step 2 (sandbox /authorize)")
        if not location.startswith(s.callback_url + "?"):
            raise Failure(f"{where}: sandbox redirected to {location.split('?')[0]}, expected {s.callback_url}")
        user.callback_url = location
        step3 = http("GET", location)
        location = self._redirect(step3, f"{where}, step 3 (gateway callback)")
        if not location.startswith(RETURN_URL + "?"):
            raise Failure(f"{where}: callback redirected to {location.split('?')[0]}, expected {RETURN_URL}")
        claims, token = party.finish(session, location, verifier, nonce)
        status, info = party.userinfo(token["access_token"])
        if status != 200:
            raise Failure(f"{where}: userinfo answered HTTP {status}")
        problems = self._claim_problems(claims, info, user)
        if problems:
            raise Failure(f"{where}: ID token or userinfo wrong in {', '.join(problems)}")
        user.user_id = claims["sub"]
        # An authorization code is single-use, and presenting it again revokes what it issued (RFC 9700 §4.5.3).
        again = party.redeem_again(session, location, verifier)
        if again != "invalid_grant":
            raise Failure(f"{where}: a second redemption of the same code answered {again!r}, expected invalid_grant")
        status, _ = party.userinfo(token["access_token"])
        if status != 401:
            raise Failure(f"{where}: userinfo after the code's replay answered HTTP {status}, expected 401")
        self.sign_ins += 1
        say(f"sign-in {self.sign_ins}: {user.label} (account {user.account_id}) → platform user {user.user_id}; "
            f"ID token valid (JWKS, iss, aud, nonce, at_hash), userinfo matches, code single-use")

    def _claim_problems(self, claims, info, user):
        """What the ID token and userinfo got wrong about the user who signed in: the names of the wrong claims."""
        expected = {"atlassian_account_id": user.account_id, "name": user.name, "email": user.email,
                    "email_verified": True, "nickname": user.nickname, "picture": user.picture}
        problems = [f"id_token.{claim}" for claim, value in expected.items() if claims.get(claim) != value]
        problems += [f"userinfo.{claim}" for claim, value in {**expected, "sub": claims.get("sub")}.items()
                     if info.get(claim) != value]
        if not claims.get("sub"):
            problems.append("id_token.sub")
        return problems

    @staticmethod
    def _redirect(response, what):
        if response.status not in (302, 303, 307):
            raise Failure(f"{what}: expected a redirect, got {response.brief()}")
        location = response.header("location")
        if not location:
            raise Failure(f"{what}: redirect without Location")
        return location

    # -- python participant's own data: its contacts table, filled from ProfileFetched like any platform service
    def wait_participant_contacts(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            self.system.supervisor.check_alive()
            rows = {(tenant_id, account_id): (user_id, name)
                    for tenant_id, account_id, user_id, name, _email in self.participant_rows(with_user=True)}
            missing = [user for user in self.users
                       if rows.get((user.tenant.id, user.account_id)) != (user.user_id, user.name)]
            if not missing:
                say(f"python-participant: {len(self.users)} contacts from ProfileFetched, each filed under the "
                    f"gateway's user id")
                return
            if time.monotonic() > deadline:
                raise Failure("python-participant: no contact (or not under the gateway's user id) for " +
                              ", ".join(user.label for user in missing) + f" after {timeout} s")
            time.sleep(0.5)

    def participant_rows(self, with_user=False):
        db = sqlite3.connect(f"file:{self.system.participant_db}?mode=ro", uri=True, timeout=30)
        try:
            columns = "tenant_id, account_id, platform_user_id, display_name, email" if with_user else \
                "tenant_id, account_id, display_name, email"
            return db.execute(f"SELECT {columns} FROM contacts").fetchall()
        finally:
            db.close()

    # -- profile-store
    def wait_profiles(self, timeout=90):
        deadline = time.monotonic() + timeout
        last_print = 0
        while True:
            self.system.supervisor.check_alive()
            have = {tenant.id: tenant.profiles() for tenant in self.tenants}
            missing = [user for user in self.users
                       if not any(row.get("accountId") == user.account_id for row in have[user.tenant.id])]
            if not missing:
                self.rows_before = have
                say("profile-store: every signed-in profile is stored (" +
                    ", ".join(f"{t}: {len(rows)} rows" for t, rows in have.items()) + ")")
                return
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                say(f"waiting for profile-store: {len(self.users) - len(missing)}/{len(self.users)} profiles")
            if time.monotonic() > deadline:
                raise Failure(f"profile-store has not stored {len(missing)} profiles after {timeout} s: "
                              + ", ".join(user.label for user in missing))
            time.sleep(1)

    # -- changes at Atlassian
    def change_accounts(self):
        for tenant in self.tenants:
            user = tenant.users[-1]  # not the first: the app's owner connection stays usable for reporting
            self.sandbox("POST", f"/_sandbox/users/{user.account_id}/close")
            user.closed = True
            say(f"sandbox: closed {user.label} (account {user.account_id}; {tenant.id} policy {tenant.policy})")
        user = self.globex.users[1]
        user.updated_name = f"{user.name.split()[0]} Updated-Surname"
        self.sandbox("POST", f"/_sandbox/users/{user.account_id}/update", {"name": user.updated_name})
        say(f"sandbox: updated the profile of {user.label} (account {user.account_id}): new name")

    # -- the PDR cycle and its consequences
    def wait_outcomes(self, while_waiting=lambda: None):
        s = self.system
        timeout = s.cycle * 1.5 + 90
        say(f"waiting for the PDR cycle ({s.cycle} s; first reports are spread over it), the erasures and the "
            f"refresh — up to {int(timeout)} s")
        deadline = time.monotonic() + timeout
        last_print = 0
        held = {(user.tenant.app_id, user.account_id) for user in self.users}
        closed = [user for user in self.users if user.closed]
        updated = [user for user in self.users if user.updated_name]
        while True:
            s.supervisor.check_alive()
            while_waiting()
            calls = self.sandbox("GET", "/_sandbox/calls")["calls"]
            reported = {(call.get("clientId"), account["accountId"]) for call in calls
                        if call.get("status") in (200, 204) for account in call.get("accounts", [])}
            erasures = [record for tenant in self.tenants for record in tenant.erasures()]
            done = [user for user in closed if any(
                record.get("status") == "completed" and record.get("tenantId") == user.tenant.id
                and record.get("cause") == "atlassian-closed" and record.get("appId") == user.tenant.app_id
                and record.get("subject") and self._erasure_matches(record, user) for record in erasures)]
            refreshed = []
            for user in updated:
                answer = http("GET", f"{s.url('profile-store')}/v1/tenants/{user.tenant.id}/profiles/"
                              f"{user.account_id}", headers=user.tenant.auth())
                if answer.status == 200 and answer.json().get("name") == user.updated_name:
                    refreshed.append(user)
            all_reported = held <= reported
            if all_reported and len(done) == len(closed) and len(refreshed) == len(updated):
                self.calls = calls
                self.erasures = erasures
                say(f"every account reported ({len(held)}), {len(done)} erasures completed, "
                    f"{len(refreshed)} updated profile refreshed")
                return
            if time.monotonic() - last_print >= 5:
                last_print = time.monotonic()
                per_app = ", ".join(
                    f"{tenant.app_id} {sum(1 for u in tenant.users if (tenant.app_id, u.account_id) in reported)}"
                    f"/{len(tenant.users)}" for tenant in self.tenants)
                states = ", ".join(str(r.get("tenantId")) + " " + str(r.get("status")) for r in erasures)
                say(f"  reported: {per_app} in {len(calls)} calls; erasures: {states or 'none yet'}; "
                    f"refreshed: {len(refreshed)}/{len(updated)}")
            if time.monotonic() > deadline:
                problems = []
                if not all_reported:
                    problems.append(f"{len(held - reported)} accounts never reported")
                if len(done) != len(closed):
                    problems.append(f"{len(closed) - len(done)} erasures not completed "
                                    f"(ledger: {[(r.get('tenantId'), r.get('status'), [(p.get('participant'), p.get('outcome')) for p in r.get('participants', [])]) for r in erasures]})")
                if len(refreshed) != len(updated):
                    problems.append("the updated profile was not refreshed in profile-store")
                raise Failure(f"after {int(timeout)} s: " + "; ".join(problems))
            time.sleep(2)

    def wait_second_cycle(self):
        """The end-to-end suite's: one more cycle, so "once per cycle" is seen twice for the active accounts and never
        again for the erased ones (their AccountHeld is tombstoned, so they are no longer reported). Returns the
        (appId, accountId) of the active accounts not reported a second time within the wait; the call log is kept
        either way."""
        s = self.system
        active = {(user.tenant.app_id, user.account_id) for user in self.users if not user.closed}
        timeout = s.cycle + 60
        say(f"waiting for the second cycle (every active account reported again) — up to {timeout} s")
        deadline = time.monotonic() + timeout
        last_print = 0
        while True:
            s.supervisor.check_alive()
            calls = self.sandbox("GET", "/_sandbox/calls")["calls"]
            counts = {}
            for call in calls:
                if call.get("status") in (200, 204):
                    for account in call.get("accounts", []):
                        key = (call.get("clientId"), account["accountId"])
                        counts[key] = counts.get(key, 0) + 1
            twice = sum(1 for key in active if counts.get(key, 0) >= 2)
            if twice == len(active):
                self.calls = calls
                say(f"second cycle: every active account reported again ({len(calls)} calls in all)")
                return []
            if time.monotonic() - last_print >= 5:
                last_print = time.monotonic()
                say(f"  second cycle: {twice}/{len(active)} active accounts reported again")
            if time.monotonic() > deadline:
                self.calls = calls
                say(f"second cycle: {len(active) - twice} of {len(active)} active accounts not reported again "
                    f"within {timeout} s")
                return [key for key in active if counts.get(key, 0) < 2]
            time.sleep(2)

    def _erasure_matches(self, record, user):
        # A completed erasure no longer shows its accountId (only the HMAC subject); identify it by tenant and app:
        # one closed account per tenant in this scenario. An open one shows the accountId.
        account = record.get("accountId")
        return account is None or account == user.account_id

    # -- what the report shows (and the end-to-end suite checks)
    def collect_after(self):
        self.rows_after = {tenant.id: tenant.profiles() for tenant in self.tenants}
        answer = expect(http("GET", self.system.url("erasure-executor") + "/v1/audit/verify",
                             headers=bearer(self.system.admin_token)), 200, "GET /v1/audit/verify")
        self.audit = answer.json()
        apps = expect(http("GET", self.system.url("pdr-reporter") + "/v1/apps",
                           headers=bearer(self.system.admin_token)), 200, "GET /v1/apps (pdr-reporter)")
        self.app_status = {app["appId"]: app for app in apps.json().get("apps", [])}

