"""The scenario's tenants and users, and their clients of the public APIs."""
import secrets
import time
import urllib.parse

from .http_client import bearer, expect, http, jwt_part
from .launcher import Failure

class Tenant:
    def __init__(self, system, tenant_id, policy, own_app):
        self.system = system
        self.id = tenant_id
        self.policy = policy
        self.own_app = own_app  # {"clientId", "clientSecret"} or None for the shared app
        self.client_id = None
        self.client_secret = None
        self._token = None
        self._token_at = 0.0
        self.users = []
        self.app_view = {}  # the app as the gateway's tenant view shows it, once configured

    @property
    def app_id(self):
        return self.own_app["clientId"] if self.own_app else self.system.shared_app["clientId"]

    def token(self):
        if self._token is None or time.monotonic() - self._token_at > 600:
            answer = expect(http("POST", self.system.gateway + "/oauth/token",
                                 form={"grant_type": "client_credentials", "client_id": self.client_id,
                                       "client_secret": self.client_secret}),
                            200, f"tenant token for {self.id} (POST /oauth/token)")
            body = answer.json()
            if body.get("token_type", "").lower() != "bearer" or not body.get("access_token"):
                raise Failure(f"POST /oauth/token for {self.id}: unexpected body keys {sorted(body)}")
            claims = jwt_part(body["access_token"], 1)
            audience = claims.get("aud")
            if claims.get("sub") != self.id or "lethe" not in (audience if isinstance(audience, list) else [audience]):
                raise Failure(f"tenant token of {self.id}: sub/aud claims are not the tenant / lethe")
            self._token = body["access_token"]
            self._token_at = time.monotonic()
        return self._token

    def auth(self):
        return bearer(self.token())

    def profiles(self):
        return self._all_pages(f"{self.system.url('profile-store')}/v1/tenants/{self.id}/profiles", "profiles",
                               f"profile-store profiles of {self.id}")

    def erasures(self):
        return self._all_pages(f"{self.system.url('erasure-executor')}/v1/tenants/{self.id}/erasures", "erasures",
                               f"executor erasures of {self.id}")

    def _all_pages(self, url, field, what):
        """Every item of a paged list API (limit 500 a page, following nextCursor)."""
        rows, cursor = [], None
        while True:
            query = "?limit=500" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
            page = expect(http("GET", url + query, headers=self.auth()), 200, what).json()
            rows.extend(page.get(field, []))
            cursor = page.get("nextCursor")
            if not cursor:
                return rows


class User:
    def __init__(self, tenant, index, first, last):
        self.tenant = tenant
        self.account_id = secrets.token_hex(12)  # 24 hex digits, like real Atlassian ids
        self.name = f"{first} {last}"
        slug = f"{first}.{last}".lower()
        self.email = f"{slug}@{tenant.id}.example.test"
        self.nickname = f"{first.lower()}{index}"
        self.picture = f"https://avatars.example.test/{self.account_id}.png"
        self.label = f"{tenant.id}#{index}"
        self.user_id = None
        self.closed = False
        self.updated_name = None
        self.callback_url = None  # where Atlassian sent the browser back to the gateway at its sign-in


PERSONAS = {
    "acme": [("Adelaide", "Quillfeather"), ("Bartholomew", "Ashgrove"), ("Cordelia", "Wrenfield")],
    "globex": [("Desmond", "Larkspur"), ("Evangeline", "Thornbury"), ("Florian", "Mossbank")],
}
# Known before the scenario runs (the suite names its tests by them); a label is what User.label holds.
TENANT_IDS = list(PERSONAS)
USER_LABELS = [f"{tenant_id}#{index}" for tenant_id, people in PERSONAS.items() for index in range(1, len(people) + 1)]

