#!/usr/bin/env python3
"""Loopback TCP proxy that makes Tansu usable from librdkafka < 2.2.0.

Why this exists
---------------
Debian 12 ships librdkafka 2.0.2. Before 2.2.0, librdkafka's
``rd_kafka_buf_skip_tags`` skips one byte too few when a KIP-482 tagged-field
buffer is non-empty (fixed upstream by librdkafka PR #4278). Tansu always writes
the four top-level tagged fields of ApiVersionsResponse v3 (SupportedFeatures,
FinalizedFeaturesEpoch, FinalizedFeatures, ZkMigrationReady); Apache Kafka
omits empty ones. So every librdkafka 2.0.2 connection to Tansu fails with
``ApiVersionRequest failed: Local: Read underflow``.

The fix: Tansu listens on an internal port and *advertises this proxy's port*,
so every client connection (bootstrap and per-broker) goes through here. On
each connection we look at the first request; if it is an ApiVersions request
(api_key 18, version >= 3), we buffer the matching response, re-encode it with
empty tag buffers (the fields librdkafka 2.0.2 does not use anyway) and a fixed
frame length. Every other byte, in both directions, is passed through
unchanged: after that first exchange each direction is a plain byte pump
(large ``recv_into`` buffer, no per-byte Python work), because the project
benchmarks ~1M msg/s through this proxy.

Only needed in front of Tansu for dev/test; Apache Kafka needs no proxy.

Usage:
    kafka_apiversions_proxy.py --listen 127.0.0.1:P2 --upstream 127.0.0.1:P1
    kafka_apiversions_proxy.py --check 127.0.0.1:P2   # ApiVersions round trip

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
import threading

API_VERSIONS = 18
PUMP_BUFFER = 1 << 20          # bytes per recv on the hot path
MAX_FIRST_FRAME = 1 << 20      # an ApiVersions response is a few hundred bytes

_I32 = struct.Struct(">i")
_REQ_HEADER = struct.Struct(">ihhi")   # length, api_key, api_version, correlation_id


def log(msg: str) -> None:
    print(f"kafka_apiversions_proxy: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# ApiVersions response rewriting
# --------------------------------------------------------------------------

def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned varint at pos; return (value, new_pos)."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 28:
            raise ValueError("bad varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _skip_tag_buffer(buf: bytes, pos: int) -> int:
    """Skip a KIP-482 tagged-field buffer (count, then tag/size/bytes each)."""
    count, pos = _uvarint(buf, pos)
    for _ in range(count):
        _, pos = _uvarint(buf, pos)          # tag
        size, pos = _uvarint(buf, pos)       # size
        pos += size
        if pos > len(buf):
            raise ValueError("tagged field past end of frame")
    return pos


def _encode_uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def rewrite_api_versions_v3(frame: bytes, correlation_id: int) -> bytes | None:
    """Re-encode an ApiVersionsResponse (v3+) frame with empty tag buffers.

    ``frame`` includes the 4-byte length prefix. The response header of
    ApiVersions is always v0 (just the correlation id, no tag buffer; see
    KIP-511), then: error_code int16, api_keys compact array of
    (api_key int16, min int16, max int16, tag buffer), throttle_time_ms int32,
    top-level tag buffer. Returns None if the frame is not what we expect, in
    which case the caller forwards it unchanged.
    """
    body = frame[4:]
    if len(body) < 4 + 2 + 1 or _I32.unpack_from(body, 0)[0] != correlation_id:
        return None
    error_code = struct.unpack_from(">h", body, 4)[0]
    if error_code != 0:
        # e.g. UNSUPPORTED_VERSION is answered in v0 format: leave it alone.
        return None
    n_plus_1, pos = _uvarint(body, 6)
    if n_plus_1 == 0:
        return None                           # null array: not expected
    out = bytearray(body[:6])                 # correlation id + error code
    out += _encode_uvarint(n_plus_1)
    for _ in range(n_plus_1 - 1):
        if pos + 6 > len(body):
            raise ValueError("api key entry past end of frame")
        out += body[pos:pos + 6]              # api_key, min_version, max_version
        out.append(0)                         # empty per-entry tag buffer
        pos = _skip_tag_buffer(body, pos + 6)
    if pos + 4 > len(body):
        raise ValueError("throttle_time_ms past end of frame")
    out += body[pos:pos + 4]                  # throttle_time_ms
    pos = _skip_tag_buffer(body, pos + 4)
    if pos != len(body):
        raise ValueError("trailing bytes after top-level tag buffer")
    out.append(0)                             # empty top-level tag buffer
    return _I32.pack(len(out)) + bytes(out)


# --------------------------------------------------------------------------
# Connection handling
# --------------------------------------------------------------------------

def _recv_exact_prefix(sock: socket.socket, buf: bytearray, n: int) -> bool:
    """Read from sock into buf until it holds at least n bytes; False on EOF."""
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
    return True


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Hot path: copy bytes until EOF. No parsing, one reusable buffer."""
    buf = bytearray(PUMP_BUFFER)
    view = memoryview(buf)
    recv_into, sendall = src.recv_into, dst.sendall
    while True:
        n = recv_into(buf)
        if not n:
            return
        sendall(view[:n])


class Connection:
    def __init__(self, proxy: "Proxy", client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        # Set by the request thread *before* any request byte reaches the
        # broker, so the response thread always sees it in time.
        self.first_request: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._done = 0
        self._closed = False

    def start(self) -> None:
        threading.Thread(target=self._run, args=(self._requests,), daemon=True).start()
        threading.Thread(target=self._run, args=(self._responses,), daemon=True).start()

    def _run(self, fn) -> None:
        try:
            fn()
            half_close = True
        except ConnectionError:
            half_close = False       # peer reset/went away: routine, not logged
        except (OSError, ValueError) as e:
            if not self._closed:
                log(f"connection error: {e!r}")
            half_close = False
        with self._lock:
            self._done += 1
            last = self._done == 2
        if half_close and not last:
            return                   # the other direction is still flowing
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.proxy.forget(self)

    def _requests(self) -> None:
        """client -> broker: note the first request header, then pump."""
        buf = bytearray()
        ok = _recv_exact_prefix(self.client, buf, _REQ_HEADER.size)
        if ok:
            _, api_key, api_version, corr = _REQ_HEADER.unpack_from(buf, 0)
            self.first_request = (api_key, api_version, corr)
        if buf:
            self.upstream.sendall(buf)
        if ok:
            _pump(self.client, self.upstream)
        self._half_close(self.upstream)

    def _responses(self) -> None:
        """broker -> client: maybe rewrite the first response, then pump."""
        buf = bytearray()
        if not _recv_exact_prefix(self.upstream, buf, 4):
            if buf:
                self.client.sendall(buf)
            self._half_close(self.client)
            return
        req = self.first_request
        if req is not None and req[0] == API_VERSIONS and req[1] >= 3:
            frame_len = 4 + _I32.unpack_from(buf, 0)[0]
            if 4 < frame_len <= MAX_FIRST_FRAME:
                if not _recv_exact_prefix(self.upstream, buf, frame_len):
                    self.client.sendall(buf)
                    self._half_close(self.client)
                    return
                frame = bytes(buf[:frame_len])
                try:
                    new = rewrite_api_versions_v3(frame, req[2])
                except ValueError as e:
                    log(f"ApiVersions response not rewritten ({e}); passing through")
                    new = None
                if new is not None:
                    buf[:frame_len] = new
        self.client.sendall(buf)
        _pump(self.upstream, self.client)
        self._half_close(self.client)

    @staticmethod
    def _half_close(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Proxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]):
        self.upstream = upstream
        self.conns: set[Connection] = set()
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(512)

    def forget(self, conn: Connection) -> None:
        with self.lock:
            self.conns.discard(conn)

    def serve(self) -> None:
        while True:
            client, _ = self.sock.accept()
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError as e:
                log(f"upstream {self.upstream[0]}:{self.upstream[1]} unreachable: {e}")
                client.close()
                continue
            for s in (client, upstream):
                # Kafka is request/response: never let Nagle delay a frame.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, client, upstream)
            with self.lock:
                self.conns.add(conn)
            conn.start()

    def shutdown(self) -> None:
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()


# --------------------------------------------------------------------------
# --check: one ApiVersions v3 round trip, validating the (rewritten) response
# --------------------------------------------------------------------------

def check(addr: tuple[str, int], timeout: float) -> int:
    client_id = b"lethe-dev-broker-check"
    body = struct.pack(">hhih", API_VERSIONS, 3, 1, len(client_id)) + client_id + b"\x00"
    for s in (b"lethe", b"1"):               # client_software_name/version
        body += _encode_uvarint(len(s) + 1) + s
    body += b"\x00"
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(_I32.pack(len(body)) + body)
            buf = bytearray()
            if not _recv_exact_prefix(s, buf, 4):
                raise OSError("connection closed")
            if not _recv_exact_prefix(s, buf, 4 + _I32.unpack_from(buf, 0)[0]):
                raise OSError("connection closed mid-frame")
    except OSError as e:
        log(f"check failed: {e}")
        return 1
    frame = bytes(buf)
    # A response that already went through the proxy re-encodes to itself.
    try:
        again = rewrite_api_versions_v3(frame, 1)
    except ValueError as e:
        log(f"check failed: malformed ApiVersions response: {e}")
        return 1
    if again is None or again != frame:
        log("check failed: ApiVersions response still carries tagged fields "
            "(is this address the proxy?)")
        return 1
    return 0


def parse_addr(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host, int(port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=parse_addr, help="address to listen on, e.g. 127.0.0.1:9093")
    ap.add_argument("--upstream", type=parse_addr, help="Tansu's listener, e.g. 127.0.0.1:9092")
    ap.add_argument("--check", type=parse_addr, metavar="ADDR",
                    help="do one ApiVersions round trip against ADDR and exit 0 if "
                         "the response is librdkafka-2.0.2-safe")
    ap.add_argument("--timeout", type=float, default=5.0, help="timeout for --check")
    args = ap.parse_args()

    if args.check:
        return check(args.check, args.timeout)
    if not args.listen or not args.upstream:
        ap.error("--listen and --upstream are required (or use --check)")

    try:
        proxy = Proxy(args.listen, args.upstream)
    except OSError as e:
        log(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {e}")
        return 2

    def on_signal(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"listening on {args.listen[0]}:{args.listen[1]}, "
        f"upstream {args.upstream[0]}:{args.upstream[1]}")
    try:
        proxy.serve()
    except SystemExit:
        pass
    finally:
        proxy.shutdown()
        log("stopped")
    # Pump threads are daemons blocked in recv(); their sockets are closed.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
