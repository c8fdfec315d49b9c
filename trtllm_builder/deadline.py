"""HTTP requests (``requests``) bounded by a deadline over the whole exchange: headers and body.

``requests``' ``timeout=(connect, read)`` bounds each socket read, not a request: a server that sends
one header byte every few seconds never trips it, and ``plan`` would wait forever. Here every socket a
request opens is registered with its :class:`Deadline`; a watchdog thread shuts those sockets down
when the deadline passes, which makes the blocked read fail at once, in any phase (status line,
headers, body, a redirect's new connection).

A deadline can also be kept alive by progress (:meth:`Deadline.progress`): a multi-gigabyte download
must not have a fixed end, but it must move (at least ``bytes`` per ``window`` seconds).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

__all__ = ["Deadline", "DeadlineExceeded", "Exchange", "send"]


class DeadlineExceeded(requests.Timeout):
    """The request (headers included) did not complete before its deadline."""


class Deadline:
    """A point in time after which the sockets of one request are shut down."""

    def __init__(self, seconds: float, *, progress_bytes: int | None = None) -> None:
        self.seconds = seconds
        self._progress_bytes = progress_bytes
        self._moved = 0
        self._expires = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._cond = threading.Condition()
        self._stopped = False
        self.expired = False
        self._thread = threading.Thread(target=self._watch, name="http-deadline", daemon=True)
        self._thread.start()

    def extend(self, seconds: float) -> None:
        """Re-arm: the deadline is now ``seconds`` from now."""
        with self._cond:
            self.seconds = seconds
            self._expires = time.monotonic() + seconds
            self._moved = 0
            self._cond.notify_all()

    def progress(self, n: int) -> None:
        """``n`` more bytes arrived; every ``progress_bytes`` of them re-arm the deadline for its window."""
        if self._progress_bytes is None:
            return
        self._moved += n
        if self._moved >= self._progress_bytes:
            self.extend(self.seconds)

    def register(self, sock: socket.socket) -> None:
        with self._cond:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._sockets.clear()
            self._cond.notify_all()
        self._thread.join(timeout=1)

    def _watch(self) -> None:
        with self._cond:
            while not self._stopped:
                left = self._expires - time.monotonic()
                if left <= 0:
                    self.expired = True
                    for sock in self._sockets:
                        _shutdown(sock)
                    return
                self._cond.wait(left)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# --- sockets are registered where they are made: in the request's own thread -----------------------

_current = threading.local()


def _register(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.register(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _watch_pools(manager: Any) -> Any:
    # plain and HTTP-proxy managers only: a SOCKS manager brings pool classes of its own
    if type(manager) in (urllib3.PoolManager, urllib3.ProxyManager):
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        return _watch_pools(super().proxy_manager_for(proxy, **kwargs))


class Exchange:
    """One request's response and its deadline; closing it closes the connection and stops the watchdog."""

    def __init__(self, session: requests.Session, response: requests.Response, deadline: Deadline) -> None:
        self.session, self.response, self.deadline = session, response, deadline

    def close(self) -> None:
        self.response.close()
        self.session.close()
        self.deadline.stop()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send(
    method: str,
    url: str,
    *,
    deadline: Deadline,
    headers: Mapping[str, str] | None = None,
    connect_timeout: float,
    read_timeout: float,
    stream: bool = True,
    allow_redirects: bool = True,
) -> Exchange:
    """Send one request on a fresh connection under ``deadline``; raises ``DeadlineExceeded`` when it passes
    before the headers are in (and any other ``requests`` error as is). Reads of the body after it
    fail once the deadline passes: check ``deadline.expired`` when they do."""
    session = requests.Session()
    adapter = _Adapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    _current.deadline = deadline
    try:
        response = session.request(
            method,
            url,
            headers=dict(headers or {}),
            stream=stream,
            timeout=(connect_timeout, read_timeout),
            allow_redirects=allow_redirects,
        )
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        session.close()
        deadline.stop()
        if deadline.expired:
            raise DeadlineExceeded(f"no complete answer within {deadline.seconds:g} s") from e
        raise
    except BaseException:
        session.close()
        deadline.stop()
        raise
    finally:
        _current.deadline = None
    if deadline.expired:  # headers cut short by the watchdog parse as a (bogus) response: never use it
        response.close()
        session.close()
        deadline.stop()
        raise DeadlineExceeded(f"no complete answer within {deadline.seconds:g} s")
    return Exchange(session, response, deadline)
