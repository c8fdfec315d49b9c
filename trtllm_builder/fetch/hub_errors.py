"""huggingface_hub failures as ``FetchError`` messages that name the fix, alike in huggingface_hub 0.x, 1.x and 2.x.

huggingface_hub talks HTTP through ``requests`` in 0.x, ``httpx`` in 1.x and ``httpx2`` in 2.x, so one
failure (a refused connection, a timeout, a body cut mid-file) reaches us as a different class from
each. This module imports none of those transports. It recognises huggingface_hub's own error
classes, whose names and meaning are the same in every version we support (``HfHubHTTPError``,
``RepositoryNotFoundError``, ``GatedRepoError``, ``RevisionNotFoundError``, ``EntryNotFoundError``,
``LocalEntryNotFoundError``, ``OfflineModeIsEnabled``), and sorts transport failures by walking the
exception's causes for the standard library's errors underneath (``ConnectionRefusedError``,
``TimeoutError``, ``ConnectionResetError``) and the class names the three transports share
(``ConnectError``/``NewConnectionError``, ``...Timeout...``, ``RemoteProtocolError``/``IncompleteRead``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from trtllm_builder.errors import FetchError
from trtllm_builder.fetch import modelcache
from trtllm_builder.secrets import collect, mask

__all__ = ["cause", "redact", "translate", "transport_failure"]

TransportFailure = Literal["connect", "timeout", "dropped"]

# Class names (anywhere in an exception's MRO) by what they mean. requests/urllib3 (hf 0.x) and
# httpx/httpx2 + httpcore/h11 (hf 1.x/2.x) spell the same failures with these names.
_TIMEOUT_NAMES = frozenset(
    {"Timeout", "TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout", "TimeoutError"}
    | {"ReadTimeoutError", "ConnectTimeoutError"}
)
_DROPPED_NAMES = frozenset(
    {"RemoteProtocolError", "ChunkedEncodingError", "ProtocolError", "IncompleteRead", "ReadError"}
    | {"ContentDecodingError", "RemoteDisconnected", "ConnectionResetError", "BrokenPipeError"}
)
_CONNECT_NAMES = frozenset(
    {"ConnectError", "NewConnectionError", "NameResolutionError", "ConnectionRefusedError", "gaierror"}
    | {"ProxyError", "SSLError", "UnsupportedProtocol", "InvalidURL"}
)
_MAX_CHAIN = 16


def redact(text: str, token: str | None) -> str:
    """``text`` with every form of ``token`` masked, for messages that may echo a foreign one."""
    return mask(text, collect([token])) if token else text


def cause(error: BaseException, token: str | None) -> BaseException | None:
    """``error`` as the ``__cause__`` of our error, unless its text would leak the token."""
    if token and any(token in str(e) or token in repr(e) for e in _chain(error)):
        return None
    return error


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then its causes and contexts (and exceptions carried in ``args``), each once, bounded."""
    seen: set[int] = set()
    todo = [error]
    while todo and len(seen) < _MAX_CHAIN:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__, *e.args) if isinstance(x, BaseException)]
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError keeps the real failure here
        if isinstance(reason, BaseException):
            todo.append(reason)


def _os_failure(e: BaseException) -> TransportFailure | None:
    """What an operating-system error says (the most reliable witness: it is the same under every transport)."""
    if isinstance(e, ConnectionRefusedError | socket.gaierror):
        return "connect"
    if isinstance(e, TimeoutError):  # socket.timeout is TimeoutError; urllib3's TimeoutError is not
        return "timeout"
    if isinstance(e, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "dropped"
    return None


def _named_failure(names: set[str]) -> TransportFailure | None:
    if names & _TIMEOUT_NAMES:
        return "timeout"
    if names & _DROPPED_NAMES:
        return "dropped"
    if names & _CONNECT_NAMES:
        return "connect"
    return None


def transport_failure(error: BaseException) -> TransportFailure | None:
    """What kind of network failure ``error`` is (from any of huggingface_hub's transports), or None.

    An operating-system error among its causes decides; else the most specific class name: each
    exception's own name before those of its bases (urllib3's ``NewConnectionError`` derives from
    ``ConnectTimeoutError`` even for a refused connection).
    """
    chain = list(_chain(error))
    for e in chain:
        if (kind := _os_failure(e)) is not None:
            return kind
    for e in chain:
        if (kind := _named_failure({type(e).__name__})) is not None:
            return kind
    for e in chain:
        if (kind := _named_failure({c.__name__ for c in type(e).__mro__})) is not None:
            return kind
    return None


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)  # None on 0.x's LocalEntryNotFoundError
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def gated_message(repo_id: str, *, token: str | None, hub: str) -> str:
    if not token:
        return (
            f"the repository `{repo_id}` is gated: pass `hf_token` (a token of an account that accepted "
            f"its license at {hub}/{repo_id})"
        )
    return (
        f"the token passed as `hf_token` has no access to the gated repository `{repo_id}`: accept its "
        f"license at {hub}/{repo_id} with that token's account, or pass a token of an account that has"
    )


def translate(
    e: BaseException,
    *,
    repo_id: str,
    revision: str | None,
    token: str | None,
    hub: str,
    partial: Path | None = None,
    filename: str | None = None,
) -> FetchError:
    """One huggingface_hub / network failure as a ``FetchError`` whose message names the fix.

    ``filename`` names the one file asked for (e.g. a recipe's ``config.json``); ``partial`` the
    directory a snapshot download keeps for the next run.
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or "the default branch"
    resume = f"; files already complete are kept in {partial} and the next run resumes" if partial else ""
    status = _status(e)
    transport = transport_failure(e)
    if isinstance(e, GatedRepoError):  # before RepositoryNotFoundError: it is a subclass of it
        msg = gated_message(repo_id, token=token, hub=hub)
    elif isinstance(e, RepositoryNotFoundError):
        msg = f"repository `{repo_id}` not found on {hub}: check the id (org/name)" + (
            "; if it is private, check that `hf_token` can read it"
            if token
            else "; if it is private, pass `hf_token` (a token with read access)"
        )
    elif isinstance(e, RevisionNotFoundError):
        msg = (
            f"revision `{rev}` not found in `{repo_id}`: use a branch, tag or commit sha that exists "
            f"(see {hub}/{repo_id}/tree/main)"
        )
    elif isinstance(e, OfflineModeIsEnabled) or (
        isinstance(e, LocalEntryNotFoundError) and any(isinstance(c, OfflineModeIsEnabled) for c in _chain(e))
    ):
        msg = (
            f"HF_HUB_OFFLINE is set and `{repo_id}` at {rev} is not in the download cache: unset "
            "HF_HUB_OFFLINE, or pin `revision` to the full sha of a cached snapshot"
        )
    elif isinstance(e, LocalEntryNotFoundError) and transport in (None, "connect"):
        # huggingface_hub's "could not reach the Hub and nothing is cached" (0.x: a subclass of EntryNotFoundError)
        msg = f"cannot reach {hub} for `{repo_id}` ({e}): check the network, or HF_ENDPOINT if you use a mirror"
    elif isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError):
        msg = (
            f"`{filename}` not found in `{repo_id}` at {rev} on {hub}"
            if filename
            else f"a file of `{repo_id}` at {rev} vanished from {hub} during the download ({e}); run again"
        )
    elif status == 401:
        msg = (
            f"token rejected by {hub}: check `hf_token` (it is invalid, expired or revoked)"
            if token
            else f"{hub} requires authentication for `{repo_id}`: pass `hf_token`"
        )
    elif status == 403:
        msg = (
            f"access to `{repo_id}` denied by {hub}: check that `hf_token` has read access to it "
            "(fine-grained tokens list the repos they may read)"
        )
    elif isinstance(e, HfHubHTTPError) and status is not None:
        msg = f"{hub} answered HTTP {status} for `{repo_id}` at {rev}: try again later{resume}"
    elif transport == "timeout":
        msg = f"{hub} did not answer in time for `{repo_id}` ({type(e).__name__}); check the network{resume}"
    elif transport == "dropped" or "Consistency check failed" in str(e):
        msg = (
            f"download of `{repo_id}` at {rev} failed: the connection to {hub} kept dropping mid-file and "
            f"huggingface_hub's retries (with resume) gave up ({type(e).__name__}: {e}){resume}"
        )
    elif transport == "connect":
        msg = f"cannot reach {hub} for `{repo_id}` ({e}): check the network, or HF_ENDPOINT if you use a mirror"
    elif isinstance(e, OSError) and modelcache.is_disk_full(e):
        msg = f"disk full while downloading `{repo_id}` ({e}); free space or move the cache{resume}"
    else:
        msg = f"download of `{repo_id}` at {rev} failed: {type(e).__name__}: {e}{resume}"
    return FetchError(redact(msg, token))
