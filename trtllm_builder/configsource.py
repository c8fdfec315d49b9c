"""Read the pipeline config's text from an http(s) URL or a local path; parsing is config.py's job.

Remote configs are read with connect/read timeouts, an overall deadline and a size cap enforced while
streaming, so a wrong URL (a model file, an endless stream, a stalled server) fails in seconds with a
message that says what was wrong.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3

from .errors import ConfigError, FetchError
from .yamlsafe import MAX_CONFIG_BYTES

__all__ = ["MAX_CONFIG_BYTES", "display_url", "read_config_text"]

_CHUNK = 64 * 1024


def display_url(url: str) -> str:
    """``url`` without credentials or query string (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


def read_config_text(source: str | Path, *, timeout: float = 30.0) -> str:
    """The text of the config at ``source``: an ``http(s)://`` URL, a ``file://`` URL or a local path.

    Never reads more than ``MAX_CONFIG_BYTES + 1`` bytes. ``timeout`` bounds connecting, each read,
    and the whole transfer. Raises ``ConfigError`` when the source is wrong (missing, HTTP 4xx, too
    large, binary or not UTF-8) and ``FetchError`` when the network failed (unreachable, timeout, 5xx).
    """
    text = str(source)
    scheme = urlsplit(text).scheme.lower() if isinstance(source, str) else ""
    if scheme in ("http", "https"):
        data = _read_url(text, timeout=timeout)
        where = display_url(text)
    elif scheme == "file":
        path = Path(unquote(urlsplit(text).path))
        data, where = _read_path(path), str(path)
    elif len(scheme) > 1:  # one letter would be a Windows drive, not a scheme
        raise ConfigError(
            f"config source `{display_url(text)}`: unsupported scheme `{scheme}://`; use http(s) or a path"
        )
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
    shown = display_url(url)
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, stream=True, timeout=(timeout, timeout), headers={"Accept": "text/*, */*"}) as r:
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
                chunk = r.raw.read1(min(_CHUNK, MAX_CONFIG_BYTES + 1 - len(buf)), decode_content=True)
                if not chunk:
                    return bytes(buf)
                buf += chunk
                if time.monotonic() > deadline:
                    raise FetchError(f"config URL {shown} took longer than {timeout:g} s to send its content")
            raise ConfigError(_too_large(shown))
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as e:
        raise FetchError(f"config URL {shown} did not answer within {timeout:g} s") from e
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise FetchError(f"cannot fetch config URL {shown}: {type(e).__name__}") from e


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
