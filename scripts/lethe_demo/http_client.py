"""HTTP for the scenario and the suite (stdlib; never follows redirects, never uses a proxy)."""
import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from .launcher import Failure


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise Failure(f"expected JSON, got {self.body[:200]!r}")

    def header(self, name):
        return self.headers.get(name) if self.headers is not None else None

    def brief(self):
        text = self.body[:300].decode("utf-8", "replace")
        return f"HTTP {self.status} {text}"


def http(method, url, body=None, form=None, headers=None, timeout=15):
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("content-type", "application/json")
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        all_headers.setdefault("content-type", "application/x-www-form-urlencoded")
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return Response(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read() or b"")
    except (urllib.error.URLError, OSError) as error:
        # Without the query: it may carry a code or a state.
        raise Failure(f"{method} {url.split('?')[0]}: no answer ({getattr(error, 'reason', error)})")


def expect(response, statuses, what):
    if isinstance(statuses, int):
        statuses = (statuses,)
    if response.status not in statuses:
        raise Failure(f"{what}: expected HTTP {'/'.join(map(str, statuses))}, got {response.brief()}")
    return response


def jwt_part(token, index):
    """The decoded JSON of part `index` of a JWT (0 header, 1 claims); {} when it is not JSON. No signature check."""
    try:
        part = token.split(".")[index]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):
        return {}


def bearer(token):
    return {"authorization": f"Bearer {token}"}


