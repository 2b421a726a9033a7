"""A front for a service run as several replicas: what a load balancer with health checks does in front of them.

Each request goes to the replicas in turn, starting with the one that answered last: a replica that refuses the
connection, drops it, or answers 503 (a replica not ready yet, or a standby that cannot reach an active replica — one
that can forwards the request there: `ActiveReplicaMiddleware`) is skipped for the next, and the round is tried again for up to `patience` seconds, so a client sees the takeover as a slow answer,
never as an error. Redirects are passed through, not followed. Used by the replica run (Tests/replicas); the demo does
not need it."""
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "content-length"}


class Front:
    def __init__(self, name, backends, patience=60):
        """backends: a function returning the replicas' base URLs (they change as replicas are restarted)."""
        self.name = name
        self.backends = backends
        self.patience = patience
        self.preferred = 0
        self.retried = 0  # requests that needed another replica or another round
        self.lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the services log requests; the front stays quiet
                pass

            def handle_one(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                status, headers, payload = front.forward(self.command, self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"front-{name}", daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def forward(self, method, path, headers, body):
        deadline = time.monotonic() + self.patience
        forwarded = {key: value for key, value in headers.items() if key.lower() not in HOP_BY_HOP}
        first_try = True
        last = "no replica"
        while True:
            urls = self.backends()
            with self.lock:
                start = self.preferred % max(len(urls), 1)
            for offset in range(len(urls)):
                index = (start + offset) % len(urls)
                target = urlsplit(urls[index])
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    connection.request(method, path, body=body, headers=forwarded)
                    response = connection.getresponse()
                    payload = response.read()
                except OSError as error:  # refused, reset, timed out: a replica down or just killed
                    last = f"{urls[index]}: {error}"
                    first_try = False
                    continue
                finally:
                    connection.close()
                if response.status == 503:
                    last = f"{urls[index]}: 503"
                    first_try = False
                    continue
                with self.lock:
                    self.preferred = index
                    if not first_try:
                        self.retried += 1
                return response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP], \
                    payload
            if time.monotonic() > deadline:
                message = f"front {self.name}: no replica answered within {self.patience} s ({last})"
                return 502, [("content-type", "text/plain")], message.encode()
            time.sleep(0.2)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
