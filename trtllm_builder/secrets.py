"""What is secret, and how to mask it: the one module every log line, error, argv and file goes through.

A secret takes several forms on its way to a sink, and each must be masked:

* as given and stripped (``HF_TOKEN=$'hf_...\\n'`` is used stripped, so a step prints it stripped);
* URL-encoded (``%2F`` for ``/`` in an AWS secret key, upper or lower case hex) and JSON-escaped
  (``plan --json``, ``plan.json``, ``manifest.json``);
* split across lines, when the value itself has line breaks (each piece is masked).

Secrets come from the Hugging Face token (input, config, ``HF_TOKEN``), S3 credentials (inputs or
the environment: :data:`CREDENTIAL_ENV` and names like ``*_TOKEN``, ``*_SECRET_ACCESS_KEY``), and
URLs: a signed ``model_tar_url`` carries its credentials in the query (``X-Amz-Credential``,
``X-Amz-Signature``), an ``https://user:password@host`` URL in its userinfo. URLs are shown with
:func:`mask_url`; their secret parts are in :func:`url_secrets` for the text that echoes them anyway
(``requests`` errors quote the path and query).

Values shorter than :data:`MIN_SECRET_CHARS` are not masked: masking ``1`` or ``true`` would garble
every line, and no credential is that short.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

from trtllm_builder.errors import ConfigError

__all__ = [
    "CREDENTIAL_ENV",
    "MASK",
    "MIN_SECRET_CHARS",
    "SECRET_KEYS",
    "clean_token",
    "collect",
    "env_secrets",
    "forms",
    "hf_token",
    "is_credential_name",
    "mask",
    "mask_url",
    "scrub",
    "secrets_in_text",
    "step_environment",
    "url_secrets",
]

MASK = "**********"
MIN_SECRET_CHARS = 6

# Config keys (at any depth, step args included) whose values are secrets.
SECRET_KEYS = frozenset(
    {
        "hf_token",
        "token",
        "access_token",
        "api_key",
        "password",
        "secret",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)

# Credentials a step never needs (steps get HF_TOKEN, set by the pipeline, and nothing else).
CREDENTIAL_ENV = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
    }
)
# ...and anything named like a credential: GITHUB_TOKEN, OPENAI_API_KEY, DB_PASSWORD, AZURE_CLIENT_SECRET.
_CREDENTIAL_NAME = re.compile(
    r"(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|ACCESS_KEY_ID|SECRET_KEY|PRIVATE_KEY|"
    r"CREDENTIALS?|CONNECTION_STRING)(?:_FILE|_PATH)?$"
)
_PATH_VALUED = re.compile(r"(?:_FILE|_PATH|_URI)$")  # names a credential's place, not the credential


def is_credential_name(name: str) -> bool:
    """Is the environment variable ``name`` a credential (withheld from steps)?"""
    upper = name.upper()
    return upper in CREDENTIAL_ENV or bool(_CREDENTIAL_NAME.search(upper))


# --- the forms of one secret ------------------------------------------------------------------------


def _json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def forms(value: str) -> list[str]:
    """Every form of ``value`` that may reach a sink (see the module docstring), longest first."""
    out: set[str] = set()
    stripped = value.strip()
    cores = {value, stripped}
    if "%" in stripped:  # given URL-encoded (a query value): it may be printed decoded
        cores.add(unquote(stripped))
    cores.update(line.strip() for line in re.split(r"[\r\n]+", stripped))
    for core in cores:
        if not core:
            continue
        out.add(core)
        for encoded in (quote(core, safe=""), quote(core), quote_plus(core)):
            out.update((encoded, _lower_hex(encoded)))
        out.add(_json_escaped(core))
    return sorted((f for f in out if len(f) >= MIN_SECRET_CHARS and f.strip("*")), key=lambda f: (-len(f), f))


def collect(
    values: Iterable[str | None] = (),
    *,
    urls: Iterable[str | None] = (),
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Every form of every secret: ``values``, the secret parts of ``urls``, and the credentials in ``env``.

    This is the list to give a sink (``mask``, the runner, ``argv.display``); longest first, so a
    secret that contains another is masked whole.
    """
    raw: list[str] = [v for v in values if v]
    for url in urls:
        if url:
            raw.extend(url_secrets(url))
    if env is not None:
        raw.extend(env_secrets(env))
    return list(_expand(tuple(raw)))


@functools.lru_cache(maxsize=64)
def _expand(values: tuple[str, ...]) -> tuple[str, ...]:
    every: set[str] = set()
    for v in values:
        every.update(forms(v))
    return tuple(sorted(every, key=lambda f: (-len(f), f)))


@functools.lru_cache(maxsize=64)
def _pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    every = _expand(values)  # longest first: at each position the longest form wins
    return re.compile("|".join(map(re.escape, every))) if every else None


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by :data:`MASK`.

    One compiled pattern per list of secrets (cached): a few microseconds a line, since the runner
    masks every line a step prints.
    """
    pattern = _pattern(tuple(s for s in secrets if s))
    return pattern.sub(MASK, text) if pattern is not None else text


def scrub(error: BaseException, secrets: Sequence[str]) -> BaseException:
    """``error`` with its message masked, in place (same type, same exit code); returned for ``raise``.

    A chained cause or context whose text holds a secret is cut off, so no traceback prints it.
    """
    if not secrets:
        return error
    error.args = tuple(mask(a, secrets) if isinstance(a, str) else a for a in error.args)
    if isinstance(error, ConfigError):
        error.problems = [mask(p, secrets) for p in error.problems]
    link, seen = error.__cause__ or error.__context__, 0
    while link is not None and seen < 16:
        if mask(str(link), secrets) != str(link):
            error.__cause__, error.__suppress_context__ = None, True
            break
        link, seen = link.__cause__ or link.__context__, seen + 1
    return error


# --- URLs ---------------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` as it may be shown: no userinfo, the query and fragment (signatures, tokens) masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # an unparsable URL (bad port, bad IPv6 literal): show nothing of it beyond the scheme
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}://{MASK}" if scheme.isalpha() else MASK
    return urlunsplit((parts.scheme, host, parts.path, MASK if parts.query else "", MASK if parts.fragment else ""))


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: userinfo, the whole query and fragment, and each of their values."""
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return [url]
    out: list[str] = []
    if password:
        out += [password, unquote(password)]
        if username:  # with a password, the user name is usually a key id
            out += [username, unquote(username)]
    for part in (parts.query, parts.fragment):
        if not part:
            continue
        out.append(part)
        for piece in part.split("&"):
            _, _, value = piece.partition("=")
            out.append(value)
        out.extend(v for _, v in parse_qsl(part, keep_blank_values=True))
    return [s for s in out if s]


# --- the environment ----------------------------------------------------------------------------------


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of the credentials in ``env`` (not those naming a file or URI), and passwords in URL values."""
    out: list[str] = []
    for name, value in env.items():
        if not value:
            continue
        if is_credential_name(name) and not _PATH_VALUED.search(name.upper()):
            out.append(value)
        elif "://" in value and "@" in value:  # PIP_INDEX_URL=https://user:password@host/...
            out.extend(url_secrets(value))
    return out


def step_environment(base: Mapping[str, str], *, hf_token: str | None) -> dict[str, str]:
    """``base`` without any credential, plus ``HF_TOKEN`` when a step needs one."""
    env = {k: v for k, v in base.items() if not is_credential_name(k)}
    if hf_token:
        env["HF_TOKEN"] = hf_token
    return env


# --- Hugging Face tokens ------------------------------------------------------------------------------

_CHAR_NAMES = {
    " ": "a space",
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a carriage return",
    "\x0b": "a vertical tab",
    "\x0c": "a form feed",
}


def _bad_char(token: str) -> str | None:
    for i, ch in enumerate(token, 1):
        where = f"at character {i} of {len(token)}"
        if ch in _CHAR_NAMES:
            return f"{_CHAR_NAMES[ch]} {where}"
        if ch.isspace():
            return f"a Unicode space (U+{ord(ch):04X}) {where}"
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"a control character (U+{ord(ch):04X}) {where}"
        if ord(ch) > 0x7E:
            return f"a non-ASCII character (U+{ord(ch):04X}) {where}"
    return None


def clean_token(value: str | None, *, what: str) -> str | None:
    """``value`` stripped (None if blank); ``ConfigError`` naming what is wrong (never the token) if malformed.

    An HTTP header value must be ASCII without line breaks: a token with a space, a line break, a
    control or a non-ASCII character inside can only fail, as a confusing connection error, later.
    """
    if value is None:
        return None
    token = value.strip()
    if not token:
        return None
    bad = _bad_char(token)
    if bad is not None:
        raise ConfigError(
            f"{what} is malformed: it has {bad} (leading and trailing whitespace is ignored). A Hugging Face "
            "token is one word of ASCII letters, digits and `_` (hf_...): copy it again from "
            "https://huggingface.co/settings/tokens"
        )
    return token


def hf_token(
    explicit: str | None = None, config: str | None = None, *, env: Mapping[str, str] | None = None
) -> str | None:
    """The Hugging Face token to use, stripped and checked: the ``hf_token`` input (or ``--hf-token``),
    else the config's ``hf_token``, else ``HF_TOKEN``; never a token stored on disk."""
    environ = os.environ if env is None else env
    for value, what in (
        (explicit, "the `hf_token` input"),
        (config, "the config's `hf_token`"),
        (environ.get("HF_TOKEN"), "HF_TOKEN (environment)"),
    ):
        token = clean_token(value, what=what)
        if token is not None:
            return token
    return None


# --- config source text -------------------------------------------------------------------------------

_SECRET_KEY_LINE = re.compile(
    r"""(?:^|[\s{,'"-])["']?\w*(?:token|secret|password|passwd|api_key|access_key)["']?\s*:(.*)""", re.I
)
_URL = re.compile(r"""[a-z][a-z0-9+.-]*://[^\s'"<>]+""", re.I)
_HF_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{30,}")  # a token: hf_ + 34; not a repo named hf_...
_WORD = re.compile(r"""[^\s'"{}\[\],:#!&*|>]+""")


def secrets_in_text(text: str) -> list[str]:
    """Secret-looking parts of config source text, for errors raised before the config is parsed.

    The values of ``*token*`` / ``*secret*`` / ``*password*`` keys (each word of them), anything
    shaped like a Hugging Face token, and the secret parts of URLs. Errors about a config must
    never echo these (PyYAML quotes the line it failed on; pydantic quotes the value).
    """
    out: list[str] = []
    for line in text.splitlines():
        m = _SECRET_KEY_LINE.search(line)
        if m:
            rest = re.split(r"\s#|[,}\]]", m.group(1), maxsplit=1)[0].strip()
            out += [rest, rest.strip("'\""), *_WORD.findall(rest)]
        out.extend(_HF_LIKE.findall(line))
        for url in _URL.findall(line):
            out.extend(url_secrets(url.rstrip(",}]")))
    return [s for s in out if len(s) >= MIN_SECRET_CHARS]
