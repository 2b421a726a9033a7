"""The gateway as an OpenID Provider, driven by a second client library independent of the demo's (authlib signs
every demo user in): pyoidc (`oic`), which fetches discovery and the JWKS itself and verifies the ID token's
signature, issuer and audience when it parses the token response; and authlib (the demo's) refusing a token that
carries another session's nonce."""
import base64
import hashlib
import urllib.parse

from oic import rndstr
from oic.oic import Client
from oic.oic.message import AuthorizationResponse, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from lethe_demo.http_client import http
from lethe_demo.scenario import RETURN_URL


def browser(url, account_id, sandbox):
    """Follows the hops a browser makes: the gateway → Atlassian's consent (as `account_id`) → the gateway's
    callback → the client's redirect URI; returns that URI."""
    location = url
    for _ in range(3):
        answer = http("GET", location + (f"&sandbox_user={account_id}" if location.startswith(sandbox) else ""))
        assert answer.status == 302, answer.brief()
        location = answer.header("location")
        if location.startswith(RETURN_URL):
            return location
    raise AssertionError(f"never reached the redirect URI: {location.split('?')[0]}")


def signed_in_user(tenant):
    """A user whose account is still open and whose profile Atlassian did not change during the scenario."""
    return next(user for user in tenant.users if not user.closed and not user.updated_name)


def test_pyoidc_code_flow_with_pkce_and_nonce(scenario, system):
    tenant = scenario.acme
    user = signed_in_user(tenant)
    client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    client.provider_config(system.gateway)  # discovery and the JWKS, into the client's key jar
    client.store_registration_info(RegistrationResponse(
        client_id=tenant.client_id, client_secret=tenant.client_secret, redirect_uris=[RETURN_URL]))
    client.redirect_uris = [RETURN_URL]
    state, nonce = rndstr(32), rndstr(32)
    pkce, verifier = client.add_code_challenge()
    request = client.construct_AuthorizationRequest(request_args={
        "response_type": "code", "scope": ["openid", "profile", "email"], "state": state, "nonce": nonce,
        "redirect_uri": RETURN_URL, **pkce})
    back = browser(request.request(client.authorization_endpoint), user.account_id, system.sandbox)

    response = client.parse_response(
        AuthorizationResponse, info=urllib.parse.urlsplit(back).query, sformat="urlencoded")
    assert response["state"] == state and response["iss"] == system.gateway
    tokens = client.do_access_token_request(
        state=state, request_args={"code": response["code"], "redirect_uri": RETURN_URL, "code_verifier": verifier},
        authn_method="client_secret_basic")
    id_token = tokens["id_token"]  # signature, iss and aud verified by pyoidc against the discovered JWKS
    assert id_token["iss"] == system.gateway and tenant.client_id in id_token["aud"]
    assert id_token["nonce"] == nonce and id_token["sub"] == user.user_id
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert id_token["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert id_token["email"] == user.email and id_token["email_verified"] is True

    info = client.do_user_info_request(state=state, token=tokens["access_token"])
    assert info["sub"] == user.user_id and info["name"] == user.name and info["atlassian_account_id"] == user.account_id


def test_pyoidc_wrong_verifier_is_invalid_grant(scenario, system):
    tenant = scenario.acme
    user = signed_in_user(tenant)
    client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    client.provider_config(system.gateway)
    client.store_registration_info(RegistrationResponse(
        client_id=tenant.client_id, client_secret=tenant.client_secret, redirect_uris=[RETURN_URL]))
    state = rndstr(32)
    pkce, _verifier = client.add_code_challenge()
    request = client.construct_AuthorizationRequest(request_args={
        "response_type": "code", "scope": ["openid"], "state": state, "nonce": rndstr(16),
        "redirect_uri": RETURN_URL, **pkce})
    back = browser(request.request(client.authorization_endpoint), user.account_id, system.sandbox)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(back).query)["code"][0]
    _other, wrong = client.add_code_challenge()
    answer = http("POST", client.token_endpoint, form={
        "grant_type": "authorization_code", "code": code, "redirect_uri": RETURN_URL, "code_verifier": wrong,
        "client_id": tenant.client_id, "client_secret": tenant.client_secret})
    assert answer.status == 400 and answer.json().get("error") == "invalid_grant", answer.brief()


def test_authlib_refuses_an_id_token_with_another_sessions_nonce(scenario, system):
    """The nonce binds the ID token to the browser session that asked for it (OIDC Core §3.1.2.1): the gateway echoes
    each request's own nonce, so a token injected into another session fails that session's check."""
    tenant = scenario.acme
    user = signed_in_user(tenant)
    party = scenario.relying_party(tenant)
    session, url, verifier, nonce = party.start()
    _other_session, _url, _verifier, other_nonce = party.start()
    assert other_nonce != nonce
    back = browser(url, user.account_id, system.sandbox)
    try:
        party.finish(session, back, verifier, other_nonce)
    except Exception as error:  # authlib's InvalidClaimError (from authlib.jose or joserfc, by authlib's version)
        assert type(error).__name__ == "InvalidClaimError" and "nonce" in str(error), repr(error)
    else:
        raise AssertionError("an ID token carrying another session's nonce was accepted")
