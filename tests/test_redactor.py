"""Masking secrets in a raw byte stream, however it is chunked (issue #14 item 8d)."""

from __future__ import annotations

import random

import pytest

from trtllm_builder.redactor import MASK, StreamRedactor

SECRET = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def run(chunks: list[bytes], secrets: list[str] = [SECRET]) -> bytes:
    r = StreamRedactor(secrets)
    return b"".join(r.feed(c) for c in chunks) + r.flush()


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_masks_every_occurrence(seed: int) -> None:
    rnd = random.Random(seed)
    text = (
        f"start {SECRET} middle\r{SECRET[:10]}\r{SECRET[10:]}\n"
        f"{SECRET[:5]}\x1b{SECRET[5:]} and hf_other {SECRET[:4]} end\n"
    ).encode()
    cuts = sorted(rnd.sample(range(1, len(text)), rnd.randint(1, 20)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    out = run(chunks)
    assert SECRET[4:12].encode() not in out and SECRET[-8:].encode() not in out
    assert out.count(MASK) == 3
    assert out.endswith(f" and hf_other {SECRET[:4]} end\n".encode())


def test_finished_lines_are_never_held_back() -> None:
    r = StreamRedactor([SECRET])
    assert r.feed(b"a line that ends in h\n") == b"a line that ends in h\n"
    assert r.feed(b"unfinished hf_AbC") == b"unfinished "  # might be the secret: wait for more
    assert r.feed(b"dEf") == b""
    assert r.feed(b" no.\n") == b"hf_AbCdEf no.\n"


def test_a_secret_cut_short_by_the_end_of_the_stream_is_masked_when_long_enough() -> None:
    assert run([b"x " + SECRET[:12].encode()]) == b"x " + MASK
    assert run([b"x " + SECRET[:3].encode()]) == b"x hf_"


def test_no_secrets_is_a_pass_through() -> None:
    r = StreamRedactor([])
    assert not r and r.feed(b"abc") == b"abc" and r.flush() == b""


def test_every_form_is_masked_longest_first() -> None:
    out = run([f"[{SECRET}\n] and [{SECRET}]".encode()], [SECRET, f"{SECRET}\n"])
    assert out == b"[" + MASK + b"] and [" + MASK + b"]"
