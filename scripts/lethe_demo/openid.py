"""A tenant's backend signing its users in through the gateway's OpenID Provider, as any framework does: discovery,
the authorization code flow with PKCE (S256) and a nonce, the ID token validated against the JWKS the discovery names,
then userinfo. Built on authlib (OAuth 2.0 client and OIDC claim rules) and joserfc (JWS/JWK), not on Lethe's code."""
import urllib.parse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet

from .launcher import Failure

SCOPE = "openid profile email"


class RelyingParty:
    """One tenant's OpenID client: its client id and secret are the tenant's credentials."""

    def __init__(self, issuer, client_id, client_secret, redirect_uri):
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.http = requests.Session()
        self.http.trust_env = False  # never through a proxy, like the rest of the scenario
        self.discovery = self._json(issuer + "/.well-known/openid-configuration", "discovery")
        if self.discovery.get("issuer") != issuer:
            raise Failure(f"discovery at {issuer} names issuer {self.discovery.get('issuer')!r}")
        self.keys = KeySet.import_key_set(self._json(self.discovery["jwks_uri"], "JWKS"))

    def _json(self, url, what):
        answer = self.http.get(url, timeout=15)
        if answer.status_code != 200:
            raise Failure(f"OpenID {what} ({url}): HTTP {answer.status_code}")
        return answer.json()

    def session(self):
        session = OAuth2Session(self.client_id, self.client_secret, scope=SCOPE, redirect_uri=self.redirect_uri,
                                code_challenge_method="S256")
        session.trust_env = False
        return session

    def start(self):
        """The authorization request: (session, URL to send the browser to, verifier, nonce)."""
        session = self.session()
        verifier, nonce = generate_token(48), generate_token(20)
        url, _state = session.create_authorization_url(
            self.discovery["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
        return session, url, verifier, nonce

    def finish(self, session, return_url, verifier, nonce):
        """The redirect back (checked for state and iss), the code exchanged, the ID token validated; returns
        (ID token claims, the token response)."""
        back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(return_url).query))
        if "error" in back:
            raise Failure(f"the provider answered error={back['error']} {back.get('error_description', '')}")
        if back.get("iss") != self.issuer:  # RFC 9207: which provider answered
            raise Failure(f"authorization response iss {back.get('iss')!r}, expected {self.issuer}")
        token = session.fetch_token(self.discovery["token_endpoint"], authorization_response=return_url,
                                    code_verifier=verifier)
        decoded = jwt.decode(token["id_token"], self.keys, algorithms=["ES256"])
        claims = CodeIDToken(
            decoded.claims, decoded.header,
            options={"iss": {"essential": True, "value": self.issuer},
                     "aud": {"essential": True, "value": self.client_id}},
            params={"nonce": nonce, "access_token": token["access_token"]})
        claims.validate(leeway=5)
        return claims, token

    def redeem_again(self, session, return_url, verifier):
        """Presents the same code a second time: the OAuth error code, or None if the provider accepted it."""
        try:
            session.fetch_token(self.discovery["token_endpoint"], authorization_response=return_url,
                                code_verifier=verifier)
        except OAuthError as error:
            return error.error
        return None

    def userinfo(self, access_token):
        """(HTTP status, body) of the userinfo endpoint for an access token."""
        answer = self.http.get(self.discovery["userinfo_endpoint"],
                               headers={"authorization": f"Bearer {access_token}"}, timeout=15)
        return answer.status_code, (answer.json() if answer.status_code == 200 else None)
