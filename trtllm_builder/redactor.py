"""Mask secrets in a raw byte stream, before it is split into lines or cut to a maximum length.

Masking each finished line is not enough: a secret that straddles the line-length cut leaks its
first part (the rest is cut, so the whole value never appears), and one broken by a ``\\r`` (a
progress display redrawing the line) or by other control bytes leaks in pieces, one per line. So
the runner feeds every chunk it reads through :class:`StreamRedactor` first:

* a secret matches with up to :data:`MAX_GAP` control bytes (``\\r``, ``\\t``, escape introducers,
  NULs ...; everything below 0x20 but ``\\n``, and DEL) between any two of its characters, and the
  whole match becomes ``**********``;
* a chunk that ends in what could be the start of a secret keeps that tail back until the next
  chunk shows whether it is one. ``\\n`` never belongs to a match, so only the last, unfinished
  line is ever held back: finished lines are never delayed;
* at the end of the stream a held tail that covers at least :data:`MIN_PARTIAL` characters of a
  secret is masked too (a step killed while printing a token).

The secrets are the forms the caller passes (the list ``secrets.mask`` is given: raw, stripped, URL-quoted ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "MAX_GAP", "MIN_PARTIAL", "StreamRedactor"]

MASK = b"**********"
MAX_GAP = 16
MIN_PARTIAL = 6
_GAP_BYTES = frozenset([*range(0x00, 0x0A), *range(0x0B, 0x20), 0x7F])
_GAP = rb"[\x00-\x09\x0b-\x1f\x7f]{0,%d}" % MAX_GAP


class StreamRedactor:
    """``feed(chunk)`` returns what is safe to pass on; ``flush()`` returns the rest at end of stream."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = sorted({s.encode("utf-8", "surrogateescape") for s in secrets if s}, key=len, reverse=True)
        self._forms = forms
        self._patterns = [re.compile(_GAP.join(re.escape(bytes([b])) for b in f)) for f in forms]
        self._held = b""

    def __bool__(self) -> bool:
        return bool(self._forms)

    def feed(self, chunk: bytes) -> bytes:
        if not self._forms:
            return chunk
        data = self._mask(self._held + chunk)
        cut = self._partial_start(data)
        self._held = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """The held tail, masked if it holds enough of a secret to matter."""
        data, self._held = self._held, b""
        if data and self._partial_len(data, 0) >= MIN_PARTIAL:
            return MASK
        return data

    def _mask(self, data: bytes) -> bytes:
        for pattern in self._patterns:
            data = pattern.sub(MASK, data)
        return data

    def _partial_start(self, data: bytes) -> int:
        """Where the earliest possible unfinished secret begins in ``data`` (``len(data)`` if none)."""
        start = len(data)
        for form in self._forms:
            window = max(0, len(data) - len(form) * (MAX_GAP + 1))
            i = data.find(form[:1], window)
            while i != -1 and i < start:
                if self._consistent(data, i, form):
                    start = i
                    break
                i = data.find(form[:1], i + 1)
        return start

    @staticmethod
    def _consistent(data: bytes, i: int, form: bytes) -> bool:
        """``data[i:]`` is a proper prefix of ``form`` with gaps: the secret may continue in the next chunk."""
        k = gap = 0
        for c in data[i:]:
            if k < len(form) and c == form[k]:
                k += 1
                gap = 0
            elif c in _GAP_BYTES and k > 0 and gap < MAX_GAP:
                gap += 1
            else:
                return False
        return 0 < k < len(form)

    def _partial_len(self, data: bytes, i: int) -> int:
        """Characters of the longest secret that ``data[i:]`` is a gapped prefix of."""
        best = 0
        for form in self._forms:
            for j in range(i, len(data)):
                if data[j : j + 1] == form[:1] and self._consistent(data, j, form):
                    k = sum(1 for c in data[j:] if c not in _GAP_BYTES)
                    best = max(best, k)
                    break
        return best
