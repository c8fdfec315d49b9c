"""Read the pipeline config's text from an http(s) URL or a local path; parsing is config.py's job.

Remote configs are read under one deadline over the whole request (connecting, headers, body: see
deadline.py) and a size cap enforced while streaming, so a wrong URL (a model file, an endless
stream, a stalled server, one that trickles its headers) fails in seconds with a message that says
what was wrong. URLs are shown with their query masked (signed URLs carry credentials there).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from trtllm_builder.config.yamlsafe import MAX_CONFIG_BYTES
from trtllm_builder.errors import ConfigError, FetchError
from trtllm_builder.secrets import mask_url

__all__ = ["MAX_CONFIG_BYTES", "read_config_text"]

_CHUNK = 64 * 1024
CONFIG_TIMEOUT = 30.0  # seconds for the whole request: connecting, headers and body


def read_config_text(source: str | Path, *, timeout: float | None = None) -> str:
    """The text of the config at ``source``: an ``http(s)://`` URL, a ``file://`` URL or a local path.

    Never reads more than ``MAX_CONFIG_BYTES + 1`` bytes. ``timeout`` (default :data:`CONFIG_TIMEOUT`)
    bounds the whole request: connecting, the headers and the body. Raises ``ConfigError`` when the
    source is wrong (missing, HTTP 4xx, too large, binary or not UTF-8) and ``FetchError`` when the
    network failed (unreachable, timeout, 5xx).
    """
    text = str(source)
    scheme = urlsplit(text).scheme.lower() if isinstance(source, str) else ""
    if scheme in ("http", "https"):
        data = _read_url(text, timeout=CONFIG_TIMEOUT if timeout is None else timeout)
        where = mask_url(text)
    elif scheme == "file":
        path = Path(unquote(urlsplit(text).path))
        data, where = _read_path(path), str(path)
    elif len(scheme) > 1:  # one letter would be a Windows drive, not a scheme
        raise ConfigError(f"config source `{mask_url(text)}`: unsupported scheme `{scheme}://`; use http(s) or a path")
    else:
        path = Path(text).expanduser()
        data, where = _read_path(path), str(path)
    return _decode(data, where)


def _read_path(path: Path) -> bytes:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config path {path} is not a file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(_too_large(str(path)))
    return data


def _read_url(url: str, *, timeout: float) -> bytes:
    # requests costs ~0.1 s to import: only configs read from a URL pay it
    import requests
    import urllib3

    from trtllm_builder.deadline import Deadline, DeadlineExceeded, send

    shown = mask_url(url)
    deadline = Deadline(timeout)  # the whole request: connecting, the headers, the body
    try:
        with send(
            "GET", url, deadline=deadline, headers={"Accept": "text/*, */*"}, connect_timeout=timeout,
            read_timeout=timeout,
        ) as exchange:  # fmt: skip
            r = exchange.response
            if r.status_code >= 500:
                raise FetchError(f"config URL {shown} answered HTTP {r.status_code}: the server failed; try again")
            if r.status_code >= 400:
                raise ConfigError(f"config URL {shown} answered HTTP {r.status_code} {r.reason}: check the URL")
            length = r.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > MAX_CONFIG_BYTES:
                raise ConfigError(_too_large(shown))
            buf = bytearray()
            while len(buf) <= MAX_CONFIG_BYTES:
                # Bounded reads: never more than the cap + 1 byte off the wire, however much is sent.
                chunk = r.raw.read(min(_CHUNK, MAX_CONFIG_BYTES + 1 - len(buf)), decode_content=True)
                if not chunk:
                    if deadline.expired:  # the watchdog closed the socket: an end that only looks like one
                        raise DeadlineExceeded(f"no complete answer within {timeout:g} s")
                    return bytes(buf)
                buf += chunk
            raise ConfigError(_too_large(shown))
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        if deadline.expired or isinstance(e, requests.Timeout | urllib3.exceptions.TimeoutError):
            raise FetchError(
                f"config URL {shown} did not answer within {timeout:g} s (the deadline covers connecting, "
                "the headers and the body): check the URL, and that the server is up and not overloaded"
            ) from None
        raise FetchError(f"cannot fetch config URL {shown}: {type(e).__name__}") from None


def _too_large(where: str) -> str:
    return (
        f"config {where} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a pipeline config is a small YAML "
        "file: check that the source points at the config, not at a model or an archive"
    )


def _decode(data: bytes, where: str) -> str:
    if b"\0" in data:
        raise ConfigError(f"config {where} is binary, not YAML text: check that the source points at the config")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config {where} is not UTF-8 text (invalid byte at offset {e.start}): save it as UTF-8"
        ) from e
