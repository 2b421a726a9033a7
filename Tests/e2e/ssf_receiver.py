"""A tenant's Shared Signals receiver, as a tenant would write one: an HTTP endpoint per tenant that takes pushed
Security Event Tokens (RFC 8935), and the verification of each SET with joserfc (a JOSE library that owes nothing to
Lethe) from the transmitter's discovery document and JWKS only.

The end-to-end run points both tenants' streams here. The receiver refuses user events with a 500 while `refusing` is
set (the run sets it until the gateway has been restarted), so every user event is seen refused, queued across a
restart, and delivered later."""
import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from joserfc import jwt
from joserfc.jwk import KeySet

from lethe_demo.http_client import expect, http

PURGED = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
PROFILE_CHANGED = "urn:lethe:secevent:event-type:profile-changed"
USER_EVENTS = (DISABLED, PURGED)


@dataclass
class Push:
    tenant_id: str  # from the path it was pushed to
    authorization: str
    token: str
    status: int  # what the receiver answered
    at: float = field(default_factory=time.monotonic)

    def unverified_claims(self):
        """The SET's claims read without verifying (to decide what to answer, as a receiver's router might, and to
        know when to stop waiting); everything the tests assert on goes through `Verifier`."""
        try:
            return json.loads(_b64url(self.token.split(".")[1]))
        except (IndexError, ValueError):
            return {}

    def unverified_events(self):
        return list(self.unverified_claims().get("events", {}))


def _b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Receiver:
    """POST /ssf/<tenant id>: 202, or 500 with an RFC 8935 error body for a user event while `refusing`."""

    def __init__(self):
        self.pushes = []
        self.lock = threading.Lock()
        self.refusing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                token = self.rfile.read(length).decode("ascii", "replace")
                tenant_id = self.path.rstrip("/").rsplit("/", 1)[-1]
                push = Push(tenant_id, self.headers.get("Authorization") or "", token, 202)
                if receiver.refusing.is_set() and any(uri in USER_EVENTS for uri in push.unverified_events()):
                    push.status = 500
                with receiver.lock:
                    receiver.pushes.append(push)
                body = b"" if push.status == 202 else \
                    json.dumps({"err": "invalid_request", "description": "not now"}).encode()
                self.send_response(push.status)
                self.send_header("Content-Length", str(len(body)))
                if body:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):  # the run's output stays the scenario's
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="ssf-receiver", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        if self.thread.is_alive():  # shutdown() waits for serve_forever, which never ran if start() was not reached
            self.server.shutdown()
        self.server.server_close()

    def url(self, tenant_id):
        return f"http://127.0.0.1:{self.server.server_address[1]}/ssf/{tenant_id}"

    def received(self, tenant_id=None):
        with self.lock:
            return [push for push in self.pushes if tenant_id is None or push.tenant_id == tenant_id]


def authorization_for(tenant_id):
    """The header each tenant's endpoint expects (given to the transmitter when the stream is created)."""
    return f"Bearer receiver-secret-of-{tenant_id}"


def create_stream(system, tenant, receiver):
    """The tenant's push stream to the receiver (every user event requested), then a verification event."""
    answer = expect(http("POST", system.gateway + "/ssf/streams", headers=tenant.auth(), body={
        "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": receiver.url(tenant.id),
                     "authorization_header": authorization_for(tenant.id)},
        "events_requested": [DISABLED, PURGED, PROFILE_CHANGED, VERIFICATION],
        "description": f"{tenant.id}'s backend"}),
        201, f"{tenant.id}: POST /ssf/streams").json()
    expect(http("POST", system.gateway + "/ssf/verify", headers=tenant.auth(),
                body={"stream_id": answer["stream_id"], "state": f"hello-{tenant.id}"}),
           204, f"{tenant.id}: POST /ssf/verify")
    return answer


class Verifier:
    """What a receiver knows: the transmitter's discovery URL. Everything else (issuer, JWKS) comes from there."""

    def __init__(self, gateway):
        discovery = expect(http("GET", gateway + "/.well-known/ssf-configuration"), 200, "SSF discovery").json()
        self.issuer = discovery["issuer"]
        self.jwks = expect(http("GET", discovery["jwks_uri"]), 200, "the transmitter's JWKS").json()
        self.keys = KeySet.import_key_set(self.jwks)

    def verify(self, token, audience):
        """The SET's claims, verified: ES256 signature by a key of the JWKS, `typ` secevent+jwt, `iss` the issuer,
        `aud` the tenant; raises otherwise."""
        decoded = jwt.decode(token, self.keys, algorithms=["ES256"])
        if decoded.header.get("typ") != "secevent+jwt":
            raise ValueError(f"typ {decoded.header.get('typ')!r}, expected secevent+jwt")
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": self.issuer},
                              aud={"essential": True, "value": audience},
                              jti={"essential": True}, iat={"essential": True}).validate(decoded.claims)
        if len(decoded.claims.get("events", {})) != 1:
            raise ValueError(f"a SET carries one event, this one {list(decoded.claims.get('events', {}))}")
        return decoded.claims
