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
benchmarks ~1M msg/s through this proxy. One thread serves every connection
(an epoll loop over non-blocking sockets; see "Connection handling").

Only needed in front of Tansu for dev/test; Apache Kafka needs no proxy.

Usage:
    kafka_apiversions_proxy.py --listen 127.0.0.1:P2 --upstream 127.0.0.1:P1
    kafka_apiversions_proxy.py --check 127.0.0.1:P2   # ApiVersions round trip

Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import signal
import socket
import struct
import sys

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
# Connection handling: one thread, one epoll loop, every connection
# --------------------------------------------------------------------------
#
# One selector loop serves every connection with non-blocking sockets. The
# first version ran two blocking pump threads per connection; with a test suite
# holding a few hundred connections on two busy cores, a thread preempted while
# it held the GIL stalled every other connection, and round trips through the
# proxy took up to 17 s (Tansu's own port: under 3 s) — long enough for every
# consumer group's session to time out at once. One thread never waits for the
# GIL, and a slow reader only holds back its own connection: a direction stops
# being read while the bytes it already read wait to be written. Nothing in the
# loop blocks, the upstream connect included.

def _recv_exact_prefix(sock: socket.socket, buf: bytearray, n: int) -> bool:
    """Read from a blocking sock into buf until it holds at least n bytes; False on EOF."""
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
    return True


CLIENT, UPSTREAM = 0, 1


class Connection:
    """A client connection and its upstream one, as two directions of bytes."""

    def __init__(self, proxy: "Proxy", client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.socks = (client, upstream)
        # The upstream connect is non-blocking: until it completes, only the upstream socket is watched (writable =
        # connected) and the client is not read.
        self.connecting = True
        # Bytes read from one side that the other side has not taken yet, by the side they go to.
        self.pending = (bytearray(), bytearray())
        self.eof = [False, False]          # the side sent EOF (nothing more to read from it)
        self.shut = [False, False]         # we sent EOF to the side
        self.masks = [0, 0]
        self.closed = False
        # The first request's header (api_key, api_version, correlation_id), read before any response can come.
        self.head = bytearray()
        self.first_request: tuple[int, int, int] | None = None
        self.first_response: bytearray | None = bytearray()   # None once passed on
        for side in (CLIENT, UPSTREAM):
            self.update(side)

    # -- events ----------------------------------------------------------------

    def on_event(self, side: int, events: int) -> None:
        if self.connecting:
            error = self.socks[UPSTREAM].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                log(f"upstream unreachable: {os.strerror(error)}")
                self.close()
                return
            self.connecting = False
            self.settle()
            return
        if events & selectors.EVENT_WRITE:
            self.flush(side)
        if not self.closed and events & selectors.EVENT_READ:
            self.read(side)
        if not self.closed:
            self.settle()

    def read(self, side: int) -> None:
        try:
            n = self.socks[side].recv_into(self.proxy.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if n == 0:
            self.eof[side] = True
            if side == UPSTREAM and self.first_response is not None:
                self.pass_first_response()
            return
        data = self.proxy.view[:n]
        if side == CLIENT:
            if self.first_request is None:
                self.head += data[:_REQ_HEADER.size - len(self.head)]
                if len(self.head) >= _REQ_HEADER.size:
                    _, api_key, api_version, corr = _REQ_HEADER.unpack_from(self.head, 0)
                    self.first_request = (api_key, api_version, corr)
            self.send(UPSTREAM, data)
        elif self.first_response is not None:
            self.first_response += data
            self.rewrite_first_response()
        else:
            self.send(CLIENT, data)

    def rewrite_first_response(self) -> None:
        """Once the first response frame is whole: rewritten when it answers ApiVersions v3+, passed on either way."""
        req, buf = self.first_request, self.first_response
        if req is None or req[0] != API_VERSIONS or req[1] < 3:
            return self.pass_first_response()
        if len(buf) < 4:
            return
        frame_len = 4 + _I32.unpack_from(buf, 0)[0]
        if not 4 < frame_len <= MAX_FIRST_FRAME:
            return self.pass_first_response()
        if len(buf) < frame_len:
            return
        try:
            new = rewrite_api_versions_v3(bytes(buf[:frame_len]), req[2])
        except ValueError as e:
            log(f"ApiVersions response not rewritten ({e}); passing through")
            new = None
        if new is not None:
            buf[:frame_len] = new
        self.pass_first_response()

    def pass_first_response(self) -> None:
        buf, self.first_response = self.first_response, None
        if buf:
            self.send(CLIENT, memoryview(buf))

    # -- bytes out -------------------------------------------------------------

    def send(self, side: int, data: memoryview) -> None:
        """Writes what the side takes now; keeps the rest (a copy: `data` may be the shared read buffer)."""
        pending = self.pending[side]
        if pending:
            pending += data
            return
        try:
            sent = self.socks[side].send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            pending += data[sent:]

    def flush(self, side: int) -> None:
        pending = self.pending[side]
        if not pending:
            return
        try:
            sent = self.socks[side].send(pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del pending[:sent]

    # -- registration and the end ----------------------------------------------

    def settle(self) -> None:
        """Passes each EOF on once its bytes are written, closes when both directions are done, re-registers."""
        for side in (CLIENT, UPSTREAM):
            other = 1 - side
            if self.eof[other] and not self.pending[side] and not self.shut[side]:
                self.shut[side] = True
                try:
                    self.socks[side].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if all(self.shut):
            self.close()
            return
        for side in (CLIENT, UPSTREAM):
            self.update(side)

    def update(self, side: int) -> None:
        # Read a side only while what it sent before is written: a slow reader holds back its own connection only.
        mask = 0
        if self.connecting:
            mask = selectors.EVENT_WRITE if side == UPSTREAM else 0
        elif not self.eof[side] and not self.pending[1 - side]:
            mask |= selectors.EVENT_READ
        if self.pending[side]:
            mask |= selectors.EVENT_WRITE
        if mask == self.masks[side]:
            return
        selector, sock = self.proxy.selector, self.socks[side]
        if self.masks[side] == 0:
            selector.register(sock, mask, (self, side))
        elif mask == 0:
            selector.unregister(sock)
        else:
            selector.modify(sock, mask, (self, side))
        self.masks[side] = mask

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (CLIENT, UPSTREAM):
            sock = self.socks[side]
            if self.masks[side]:
                try:
                    self.proxy.selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
            try:
                sock.close()
            except OSError:
                pass
        self.proxy.conns.discard(self)


class Proxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]):
        self.upstream = upstream
        self.conns: set[Connection] = set()
        self.selector = selectors.DefaultSelector()
        self.buffer = bytearray(PUMP_BUFFER)
        self.view = memoryview(self.buffer)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(512)
        self.sock.setblocking(False)
        self.selector.register(self.sock, selectors.EVENT_READ, None)

    def serve(self) -> None:
        while True:
            for key, events in self.selector.select():
                if key.data is None:
                    self.accept()
                else:
                    conn, side = key.data
                    if not conn.closed:
                        conn.on_event(side, events)

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            for s in (client, upstream):
                # Kafka is request/response: never let Nagle delay a frame.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
            # Never a blocking connect: when a burst of connections overflows the broker's accept queue, a connect
            # waits out SYN retransmits (1 s, 2 s, 4 s...), which in this one thread would stall every connection.
            error = upstream.connect_ex(self.upstream)
            if error not in (0, errno.EINPROGRESS):
                log(f"upstream {self.upstream[0]}:{self.upstream[1]} unreachable: {os.strerror(error)}")
                client.close()
                upstream.close()
                continue
            self.conns.add(Connection(self, client, upstream))

    def shutdown(self) -> None:
        self.sock.close()
        for c in list(self.conns):
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
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
