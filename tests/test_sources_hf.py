"""Hugging Face sources, through the real huggingface_hub client against the fake hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import hubserver
import pytest
from hubserver import HubServer

from trtllm_builder.errors import FetchError, PreflightError
from trtllm_builder.fetch.sources import FetchedModel, ModelRef, fetch_model, remote_size

hub_server = hubserver.hub_server  # the fixture

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_GoodTokenForTheGatedRepo1234567890"
OTHER = "hf_ValidTokenWithoutAccess0987654321"
BOGUS = "hf_NotATokenTheHubKnowsAbout55555555"

SHARD = 300_000


def _shards() -> dict[str, bytes]:
    return {
        "model-00001-of-00002.safetensors": os.urandom(SHARD),
        "model-00002-of-00002.safetensors": os.urandom(SHARD + 7),
    }


def llama_files() -> dict[str, bytes]:
    """A repo laid out like meta-llama's: HF weights beside everything a build must not download."""
    shards = _shards()
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    return {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"]}).encode(),
        "generation_config.json": b'{"do_sample": true}',
        "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}",
        "special_tokens_map.json": b"{}",
        "model.safetensors.index.json": json.dumps(index).encode(),
        **shards,
        "README.md": b"# a model card",
        ".gitattributes": b"*.safetensors filter=lfs",
        "original/consolidated.00.pth": os.urandom(20_000),
        "original/params.json": b"{}",
        "original/tokenizer.model": b"sp",
        "consolidated.safetensors": os.urandom(20_000),
        "model.gguf": os.urandom(20_000),
        "onnx/model.onnx": os.urandom(20_000),
        "pytorch_model.bin": os.urandom(20_000),
        "flax_model.msgpack": os.urandom(20_000),
    }


EXPECTED = (
    "config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def _sha(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def _fetch(ref: ModelRef, cache: Path, lines: list[str], **kw: object) -> FetchedModel:
    return fetch_model(ref, cache_dir=cache, log=lines.append, **kw)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_downloads_only_what_a_build_needs_pinned_to_the_sha(hub_server: HubServer, cache: Path) -> None:
    files = llama_files()
    sha = hub_server.add_repo("meta/llama", files)
    lines: list[str] = []

    model = _fetch(ModelRef("meta/llama"), cache, lines, token=None)

    assert model.source == "hf" and model.revision == sha and model.id == "meta/llama"
    assert model.path == cache / "models" / "meta--llama" / sha
    assert model.files == EXPECTED
    assert model.size_bytes == sum(len(files[n]) for n in EXPECTED)
    for name in EXPECTED:
        assert _sha(model.path / name) == _sha(files[name]), name
    fetched = {r.path for r in hub_server.file_gets()}
    for unwanted in ("consolidated", "gguf", "onnx", "pytorch_model.bin", "msgpack", "original", "README"):
        assert not [p for p in fetched if unwanted in p], unwanted
    # huggingface_hub's bookkeeping is not part of the published snapshot; nothing half-done is left
    assert not (model.path / ".cache").exists()
    assert not list(model.path.parent.glob("*.partial"))
    # LFS bytes come from the "CDN" host, which never sees the Authorization header
    assert all(r.auth is None for r in hub_server.requests if r.path.startswith("/cdn-lfs/"))
    assert any("downloaded" in line for line in lines)


def test_bin_weights_only_when_there_are_no_safetensors(hub_server: HubServer, cache: Path) -> None:
    hub_server.add_repo(
        "old/gpt",
        {
            "config.json": b"{}",
            "vocab.json": b"{}",
            "merges.txt": b"a b",
            "pytorch_model.bin": os.urandom(50_000),
            "training_args.bin": b"pickled",
            "tf_model.h5": os.urandom(20_000),
        },
    )
    model = _fetch(ModelRef("old/gpt"), cache, [], token=None)
    assert model.files == ("config.json", "merges.txt", "pytorch_model.bin", "vocab.json")


def test_repo_without_weights_fails_before_downloading(hub_server: HubServer, cache: Path) -> None:
    hub_server.add_repo("org/gguf-only", {"config.json": b"{}", "model.gguf": os.urandom(20_000)})
    with pytest.raises(FetchError, match=r"no \*\.safetensors or \*\.bin weights"):
        _fetch(ModelRef("org/gguf-only"), cache, [], token=None)
    assert hub_server.file_gets() == []


def test_pinned_sha_is_served_from_cache_without_network(hub_server: HubServer, cache: Path) -> None:
    sha = hub_server.add_repo("meta/llama", llama_files())
    first = _fetch(ModelRef("meta/llama", revision="main"), cache, [], token=None)
    assert first.revision == sha

    hub_server.stop()
    seen = len(hub_server.requests)
    lines: list[str] = []
    again = _fetch(ModelRef("meta/llama", revision=sha), cache, lines, token=None)

    assert again == first
    assert len(hub_server.requests) == seen
    assert any("using cached" in line for line in lines)
    # A branch needs the hub to be pinned; with the hub gone that is a clear error, not a stale hit.
    with pytest.raises(FetchError, match="cannot reach"):
        _fetch(ModelRef("meta/llama", revision="main"), cache, [], token=None)


def test_short_sha_resolves_to_the_full_one(hub_server: HubServer, cache: Path) -> None:
    sha = hub_server.add_repo("meta/llama", llama_files())
    model = _fetch(ModelRef("meta/llama", revision=sha[:10]), cache, [], token=None)
    assert model.revision == sha


def test_moved_branch_downloads_the_new_commit(hub_server: HubServer, cache: Path) -> None:
    old_files = llama_files()
    old = hub_server.add_repo("meta/llama", old_files)
    first = _fetch(ModelRef("meta/llama"), cache, [], token=None)

    new_files = {**old_files, "model-00002-of-00002.safetensors": os.urandom(SHARD)}
    new = hub_server.commit("meta/llama", new_files)
    second = _fetch(ModelRef("meta/llama"), cache, [], token=None)

    assert (first.revision, second.revision) == (old, new)
    assert first.path != second.path
    name = "model-00002-of-00002.safetensors"
    assert _sha(second.path / name) == _sha(new_files[name])
    assert _sha(first.path / name) == _sha(old_files[name])  # the old snapshot is untouched


def test_remote_size_is_the_size_of_the_selected_files(hub_server: HubServer) -> None:
    files = llama_files()
    hub_server.add_repo("meta/llama", files)
    assert remote_size(ModelRef("meta/llama"), token=None) == sum(len(files[n]) for n in EXPECTED)


def test_two_processes_share_one_download(hub_server: HubServer, cache: Path, tmp_path: Path) -> None:
    hub_server.add_repo("meta/llama", llama_files())
    hub_server.slow_bps = 150_000  # ~2 s per shard: the second process arrives mid-download
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from trtllm_builder.fetch.sources import ModelRef, fetch_model
        m = fetch_model(ModelRef("meta/llama"), token=None, cache_dir=Path({str(cache)!r}), log=print)
        print("RESULT", m.path, m.revision, len(m.files))
        """
    )
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = {line for out in outputs for line in out.splitlines() if line.startswith("RESULT")}
    assert len(results) == 1, outputs  # same path, same sha
    for name in EXPECTED:
        assert len(hub_server.file_gets(name)) == 1, name
    assert any("another build is fetching" in out for out in outputs), outputs


def test_connection_dropped_mid_file_is_resumed(hub_server: HubServer, cache: Path) -> None:
    # huggingface_hub writes (and so resumes from) 10 MiB chunks: drop past the first one
    name = "model-00001-of-00002.safetensors"
    files = {**llama_files(), name: os.urandom(12 << 20)}
    hub_server.add_repo("meta/llama", files)
    hub_server.drop_at, hub_server.drop_times, hub_server.drop_files = 11 << 20, 1, name

    model = _fetch(ModelRef("meta/llama"), cache, [], token=None)

    assert _sha(model.path / name) == _sha(files[name])
    assert [r.range for r in hub_server.file_gets(name)] == [None, f"bytes={10 << 20}-"]


def test_connection_dropping_every_time_fails_clearly(hub_server: HubServer, cache: Path) -> None:
    hub_server.add_repo("meta/llama", llama_files())
    hub_server.drop_at, hub_server.drop_times = 100_000, -1
    hub_server.drop_files = "model-00001-of-00002.safetensors"

    with pytest.raises(FetchError, match="kept dropping mid-file") as info:
        _fetch(ModelRef("meta/llama"), cache, [], token=None)

    assert "next run resumes" in str(info.value)
    assert not [p for p in (cache / "models" / "meta--llama").iterdir() if p.is_dir() and "." not in p.name]
    # a second attempt, with the network healthy again, finishes from the partial directory
    hub_server.drop_at = None
    before = len(hub_server.file_gets("model-00002-of-00002.safetensors"))
    model = _fetch(ModelRef("meta/llama"), cache, [], token=None)
    assert model.files == EXPECTED
    assert len(hub_server.file_gets("model-00002-of-00002.safetensors")) == before  # kept, not fetched again


def _assert_no_token(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *extra: str) -> None:
    out, err = capsys.readouterr()
    for text in (out, err, caplog.text, *extra):
        for token in (TOKEN, OTHER, BOGUS):
            assert token not in text


@pytest.fixture
def gated(hub_server: HubServer) -> HubServer:
    hub_server.add_repo("meta/gated", llama_files(), gated=True, tokens=(TOKEN,))
    hub_server.valid_tokens.add(OTHER)
    return hub_server


def test_gated_without_token_says_pass_hf_token(
    gated: HubServer, cache: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FetchError, match=r"is gated: pass `hf_token`") as info:
        fetch_model(ModelRef("meta/gated"), token=None, cache_dir=cache)
    assert gated.file_gets() == []
    _assert_no_token(capsys, caplog, str(info.value))


def test_gated_with_a_token_without_access(
    gated: HubServer, cache: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FetchError, match=r"has no access to the gated repository `meta/gated`: accept") as info:
        fetch_model(ModelRef("meta/gated"), token=OTHER, cache_dir=cache)
    _assert_no_token(capsys, caplog, str(info.value), repr(info.value.__cause__))


def test_invalid_token_is_rejected(
    gated: HubServer, cache: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gated.echo_token_in_errors = True  # the server puts the token in its error text: we must not
    with pytest.raises(FetchError, match=r"token rejected.*check `hf_token`") as info:
        fetch_model(ModelRef("meta/gated"), token=BOGUS, cache_dir=cache)
    assert info.value.__cause__ is None  # the foreign error echoed the token, so it is not chained
    _assert_no_token(capsys, caplog, str(info.value))


def test_gated_with_the_right_token(
    gated: HubServer,
    cache: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    model = fetch_model(ModelRef("meta/gated"), token=TOKEN, cache_dir=cache)
    assert model.files == EXPECTED
    assert all(r.auth == f"Bearer {TOKEN}" for r in gated.requests if "/resolve/" in r.path)
    # HF_TOKEN is the fallback when no `hf_token` is given
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert remote_size(ModelRef("meta/gated"), token=None) == model.size_bytes
    _assert_no_token(capsys, caplog)
    for path in cache.rglob("*"):  # nothing in the cache holds the token, in its name or its bytes
        assert TOKEN not in str(path)
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes()


def test_missing_repo(hub_server: HubServer, cache: Path) -> None:
    with pytest.raises(FetchError, match=r"repository `nobody/nothing` not found on http://127\.0\.0\.1:\d+"):
        fetch_model(ModelRef("nobody/nothing"), token=None, cache_dir=cache)


def test_missing_revision(hub_server: HubServer, cache: Path) -> None:
    hub_server.add_repo("meta/llama", llama_files())
    with pytest.raises(FetchError, match=r"revision `v9` not found in `meta/llama`"):
        fetch_model(ModelRef("meta/llama", revision="v9"), token=None, cache_dir=cache)
    with pytest.raises(FetchError, match=r"revision `f{40}` not found"):
        fetch_model(ModelRef("meta/llama", revision="f" * 40), token=None, cache_dir=cache)


def test_disk_too_small_fails_before_downloading(hub_server: HubServer, cache: Path) -> None:
    hub_server.add_repo("meta/llama", llama_files())
    with pytest.raises(PreflightError, match=r"needs about [\d.]+ GiB .* x 1e\+09\) but only [\d.]+ GiB are free"):
        fetch_model(ModelRef("meta/llama"), token=None, cache_dir=cache, free_disk_multiplier=1e9)
    assert hub_server.file_gets() == []


# --- every kind of failure, translated alike by huggingface_hub 0.x, 1.x and 2.x -------------------------


def _private(hub: HubServer) -> None:
    hub.add_repo("org/private", llama_files(), private=True, tokens=(TOKEN,))
    hub.valid_tokens.add(OTHER)


def _vanished(hub: HubServer) -> None:
    hub.add_repo("meta/llama", llama_files())
    hub.missing.add("model-00002-of-00002.safetensors")  # listed, but 404 when fetched


def _down(hub: HubServer) -> None:
    hub.add_repo("meta/llama", llama_files())
    hub.api_status = 503


def _stalled(hub: HubServer) -> None:
    hub.add_repo("meta/llama", llama_files())
    hub.stall_api = True


def _gone(hub: HubServer) -> None:
    hub.add_repo("meta/llama", llama_files())
    hub.stop()


FAILURES = [
    # (case, repo, token, set-up, what the message must say)  -- the huggingface_hub class it exercises
    (
        "RepositoryNotFoundError",
        "nobody/nothing",
        None,
        lambda hub: None,
        r"repository `nobody/nothing` not found on .*pass `hf_token`",
    ),
    (
        "private, no token (401 RepoNotFound)",
        "org/private",
        None,
        _private,
        r"`org/private` not found .*if it is private, pass `hf_token`",
    ),
    (
        "private, other token (404)",
        "org/private",
        OTHER,
        _private,
        r"`org/private` not found .*check that `hf_token` can read it",
    ),
    (
        "GatedRepoError (403)",
        "meta/gated",
        OTHER,
        lambda hub: (
            hub.add_repo("meta/gated", llama_files(), gated=True, tokens=(TOKEN,)) and hub.valid_tokens.add(OTHER)
        ),
        r"has no access to the gated repository",
    ),
    (
        "HfHubHTTPError 401",
        "meta/llama",
        BOGUS,
        lambda hub: hub.add_repo("meta/llama", llama_files()),
        r"token rejected by .*check `hf_token`",
    ),
    ("RevisionNotFoundError", "meta/llama", None, lambda hub: hub.add_repo("meta/llama", llama_files()) and None, None),
    (
        "EntryNotFoundError (file deleted meanwhile)",
        "meta/llama",
        None,
        _vanished,
        r"(?s)a file of `meta/llama` at \w+ vanished from .*run again",
    ),
    ("HfHubHTTPError 503", "meta/llama", None, _down, r"answered HTTP 503 for `meta/llama`.*try again later"),
    ("timeout", "meta/llama", None, _stalled, r"did not answer in time for `meta/llama`.*check the network"),
    (
        "connection refused",
        "meta/llama",
        None,
        _gone,
        r"cannot reach http://127\.0\.0\.1:\d+ for `meta/llama`.*HF_ENDPOINT",
    ),
]


@pytest.mark.parametrize(("case", "repo", "token", "setup", "expected"), FAILURES, ids=[f[0] for f in FAILURES])
def test_failures_name_the_fix(
    hub_server: HubServer,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    repo: str,
    token: str | None,
    setup: object,
    expected: str | None,
) -> None:
    from trtllm_builder.fetch import hub

    monkeypatch.setattr(hub, "API_TIMEOUT", 1.0)  # the stalled hub: fail in a second, not 30
    setup(hub_server)  # type: ignore[operator]
    revision = "v9" if case == "RevisionNotFoundError" else None
    expected = expected or r"revision `v9` not found in `meta/llama`: use a branch, tag or commit sha"
    with pytest.raises(FetchError, match=expected) as info:
        fetch_model(ModelRef(repo, revision=revision), token=token, cache_dir=cache, log=lambda _: None)
    for secret in (TOKEN, OTHER, BOGUS):
        assert secret not in str(info.value) and secret not in repr(info.value.__cause__)
    assert secret not in capsys.readouterr().err
    assert (
        not list((cache / "models").glob("*/*[0-9a-f]")) if (cache / "models").exists() else True
    )  # nothing published


def test_offline_mode_is_named(hub_server: HubServer, cache: Path) -> None:
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a process of its own
    sha = hub_server.add_repo("meta/llama", llama_files())
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from trtllm_builder.errors import FetchError
        from trtllm_builder.fetch.sources import ModelRef, fetch_model
        try:
            fetch_model(ModelRef("meta/llama", revision={sha!r}), token=None, cache_dir=Path({str(cache)!r}), log=print)
        except FetchError as e:
            print("ERROR", e)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )
    assert "ERROR HF_HUB_OFFLINE is set and `meta/llama`" in res.stdout, res.stdout + res.stderr
    assert "pin `revision` to the full sha of a cached snapshot" in res.stdout
    assert hub_server.requests == []


def test_recipe_config_json_missing_is_named(hub_server: HubServer, cache: Path) -> None:
    from trtllm_builder.config.schema import ModelSpec
    from trtllm_builder.fetch.modelconfig import read_model_config

    hub_server.add_repo("org/no-config", {"model.safetensors": os.urandom(20_000)})
    with pytest.raises(
        FetchError, match=r"needs `org/no-config`'s config.json: `config.json` not found in `org/no-config`"
    ):
        read_model_config(ModelSpec(id="org/no-config"), token=None, cache_dir=cache)


# --- a cached gated or private model is no bypass (issue #14, item 1) -------------------------------------


@pytest.mark.parametrize("kind", ["gated", "private"])
def test_cached_restricted_model_needs_a_token_that_can_read_it(hub_server: HubServer, cache: Path, kind: str) -> None:
    sha = hub_server.add_repo("org/restricted", llama_files(), **{kind: True}, tokens=(TOKEN,))  # type: ignore[arg-type]
    hub_server.valid_tokens.add(OTHER)
    first = fetch_model(ModelRef("org/restricted"), token=TOKEN, cache_dir=cache, log=lambda _: None)
    assert first.revision == sha
    gets = len(hub_server.file_gets())

    refused = r"is gated: pass `hf_token`" if kind == "gated" else r"not found .*if it is private, pass `hf_token`"
    for revision in (None, "main", sha, sha[:12]):  # plain, branch, the full sha, a short sha
        with pytest.raises(FetchError, match=refused):
            fetch_model(ModelRef("org/restricted", revision=revision), token=None, cache_dir=cache, log=lambda _: None)
    other = r"has no access to the gated repository" if kind == "gated" else r"check that `hf_token` can read it"
    with pytest.raises(FetchError, match=other):
        fetch_model(ModelRef("org/restricted", revision=sha), token=OTHER, cache_dir=cache, log=lambda _: None)

    lines: list[str] = []
    again = fetch_model(ModelRef("org/restricted", revision=sha), token=TOKEN, cache_dir=cache, log=lines.append)
    assert again == first
    assert any("using cached" in line and "access checked" in line for line in lines), lines
    assert len(hub_server.file_gets()) == gets  # nothing downloaded again
    if kind == "gated":  # model_info answers anyone: the check is a HEAD of a file, with the token
        head = [r for r in hub_server.requests if r.method == "HEAD"][-1]
        assert "/resolve/" in head.path and head.auth == f"Bearer {TOKEN}"


def test_cached_gated_model_is_refused_through_the_cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], hub_server: HubServer, tmp_path: Path
) -> None:
    from modelgen import make_tiny_model

    model = make_tiny_model(tmp_path / "src", "llama")
    sha = hub_server.add_repo(
        "org/gated-llama", {p.name: p for p in model.iterdir() if p.is_file()}, gated=True, tokens=(TOKEN,)
    )
    cfg = tmp_path / "build.yaml"
    steps = (
        "trtllm: {example: llama}\nsteps:\n"
        "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16}}\n"
        "  - {name: build, command: trtllm-build, args: {max_batch_size: 1, max_seq_len: 64}}\n"
    )
    env = {"HF_ENDPOINT": hub_server.endpoint}
    cfg.write_text("model: {id: org/gated-llama}\n" + steps)
    built = run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz"), env={**env, "HF_TOKEN": TOKEN})
    assert built.returncode == 0, built.stdout + built.stderr
    for model_line in ("model: {id: org/gated-llama}\n", f"model: {{id: org/gated-llama, revision: {sha}}}\n"):
        cfg.write_text(model_line + steps)
        res = run_cli("build", str(cfg), "-o", str(tmp_path / "b.tar.gz"), env=env)
        assert res.returncode != 0, res.stdout + res.stderr
        assert "is gated: pass `hf_token`" in res.stdout + res.stderr
        assert "using cached" not in res.stdout + res.stderr
        assert not (tmp_path / "b.tar.gz").exists()
