"""A loopback HTTP server that is slow on purpose: it trickles its headers, or its body, a byte at a time.

``requests``' read timeout bounds each socket read, so a byte every ``interval`` seconds keeps a
request alive forever unless something bounds the whole exchange. Raw sockets, so the timing is
exactly what the test says.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["SlowServer", "slow_server"]


@dataclass
class SlowServer:
    url: str
    connections: list[float]  # when each connection was accepted (monotonic)
    closed: list[float]  # when the client went away (monotonic)


def _serve(conn: socket.socket, mode: str, interval: float, body: bytes, server: SlowServer) -> None:
    try:
        conn.recv(65536)  # the request (small, one read)
        if mode == "headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for byte in b"X-Trickle: " + b"a" * 10_000:
                conn.sendall(bytes([byte]))
                time.sleep(interval)
        else:  # "body": headers at once, then the body a byte at a time
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: "slow"\r\n\r\n' % len(body))
            for byte in body:
                conn.sendall(bytes([byte]))
                time.sleep(interval)
    except OSError:
        pass
    finally:
        server.closed.append(time.monotonic())
        conn.close()


@contextmanager
def slow_server(mode: str = "headers", *, interval: float = 0.2, body: bytes = b"x" * 100_000) -> Iterator[SlowServer]:
    """Serve every request slowly on 127.0.0.1 until the block ends."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    server = SlowServer(f"http://127.0.0.1:{sock.getsockname()[1]}", [], [])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server.connections.append(time.monotonic())
            threading.Thread(target=_serve, args=(conn, mode, interval, body, server), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()
