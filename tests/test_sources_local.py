"""Local directories, ``model_tar_url`` tarballs, classify() and tokenizer_files()."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import hubserver
import pytest
from conftest import CliRun
from hubserver import HubServer

from trtllm_builder.errors import ConfigError, FetchError, PreflightError
from trtllm_builder.fetch.sources import ModelRef, check_ref, classify, fetch_model, remote_size, tokenizer_files

hub_server = hubserver.hub_server  # the fixture


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"w" * 1000)
    (root / "tokenizer.json").write_text("{}")
    (root / "tokenizer_config.json").write_text("{}")
    (root / "generation_config.json").write_text("{}")
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("x")
    return root


# -- classify ----------------------------------------------------------------------------------


def test_classify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model_dir(tmp_path / "m")
    assert classify(ModelRef(str(model))) == "local"
    assert classify(ModelRef(f"file://{model}")) == "local"
    assert classify(ModelRef("meta-llama/Llama-3.1-8B-Instruct")) == "hf"
    assert classify(ModelRef("gpt2", revision="main")) == "hf"
    assert classify(ModelRef("shown name", tar_url="https://example.com/m.tar.gz")) == "tar"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert classify(ModelRef("org/name")) == "local"  # an existing directory wins, as in transformers


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (ModelRef("/no/such/dir"), r"local model directory /no/such/dir does not exist"),
        (ModelRef("file:///no/such/dir"), r"does not exist"),
        (ModelRef("./relative/missing"), r"does not exist"),
        (ModelRef("not a repo!"), r"neither an existing directory nor a valid Hugging Face repo id"),
        (ModelRef("a/b/c"), r"neither an existing directory"),
        (ModelRef(""), r"model id is empty"),
        (ModelRef("x", tar_url="ftp://host/m.tar"), r"`model_tar_url` must be an http\(s\) URL"),
        (ModelRef("x", revision="main", tar_url="https://h/m.tar"), r"`revision` applies to Hugging Face repos"),
    ],
)
def test_classify_rejects(ref: ModelRef, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        classify(ref)


# -- local directories -------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[float, int]]:
    return {str(p): (p.stat().st_mtime, p.stat().st_size) for p in root.rglob("*")}


def test_local_directory_is_used_in_place(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    before = _snapshot(model)
    lines: list[str] = []
    fetched = fetch_model(ModelRef(f"file://{model}"), token=None, cache_dir=tmp_path / "cache", log=lines.append)
    assert fetched.path == model and fetched.source == "local" and fetched.revision is None
    assert fetched.files == (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "sub/notes.txt",
        "tokenizer.json",
        "tokenizer_config.json",
    )
    assert fetched.size_bytes == sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    assert _snapshot(model) == before
    assert not (tmp_path / "cache").exists()  # nothing copied
    assert remote_size(ModelRef(str(model)), token=None) is None


def test_local_directory_needs_config_json(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(FetchError, match=r"has no config\.json"):
        fetch_model(ModelRef(str(tmp_path / "m")), token=None, cache_dir=tmp_path / "cache", log=lambda _: None)


def test_tokenizer_files(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    (model / "merges.txt").write_text("")
    (model / "tokenizer.model").write_bytes(b"sp")
    (model / "cl100k.tiktoken").write_text("")
    names = [p.name for p in tokenizer_files(model)]
    assert names == [
        "cl100k.tiktoken",
        "generation_config.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ]


# -- tarballs ----------------------------------------------------------------------------------

Member = tuple[str, bytes | None, dict[str, object]]


def make_tar(members: list[Member], *, gz: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name)
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


WEIGHTS = os.urandom(300_000)
GOOD: list[Member] = [
    ("llama/", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
    ("llama/config.json", b"{}", {}),
    ("llama/model.safetensors", WEIGHTS, {}),
    ("llama/tokenizer.json", b"{}", {}),
    ("llama/tok.json", None, {"type": tarfile.SYMTYPE, "linkname": "tokenizer.json"}),
    ("llama/copy.json", None, {"type": tarfile.LNKTYPE, "linkname": "llama/config.json"}),
]


@pytest.fixture
def files_server() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


@pytest.mark.parametrize("gz", [True, False], ids=["tar.gz", "tar"])
def test_tarball_is_streamed_extracted_and_cached(files_server: HubServer, tmp_path: Path, gz: bool) -> None:
    files_server.static["/m.tar"] = make_tar(GOOD, gz=gz)
    url = files_server.endpoint + "/m.tar"
    ref = ModelRef("my-llama", tar_url=url)
    lines: list[str] = []

    model = fetch_model(ref, token=None, cache_dir=tmp_path / "cache", log=lines.append)

    assert model.source == "tar" and model.id == "my-llama" and model.revision is None
    assert model.path.name == "llama"  # the single top-level folder
    assert (model.path / "model.safetensors").read_bytes() == WEIGHTS
    assert os.readlink(model.path / "tok.json") == "tokenizer.json"
    assert (model.path / "copy.json").read_text() == "{}"
    assert model.files == ("config.json", "copy.json", "model.safetensors", "tok.json", "tokenizer.json")
    assert not list((tmp_path / "cache" / "tars").glob("*.partial"))
    assert remote_size(ref, token=None) == len(files_server.static["/m.tar"])

    again = fetch_model(ref, token=None, cache_dir=tmp_path / "cache", log=lines.append)
    assert again.path == model.path
    assert any("using cached tarball" in line for line in lines)

    files_server.static["/m.tar"] = make_tar([*GOOD, ("llama/extra.json", b"{}", {})], gz=gz)  # new ETag
    changed = fetch_model(ref, token=None, cache_dir=tmp_path / "cache", log=lines.append)
    assert changed.path != model.path and "extra.json" in changed.files


def test_flat_tarball_uses_the_extraction_root(files_server: HubServer, tmp_path: Path) -> None:
    files_server.static["/flat.tar.gz"] = make_tar([("config.json", b"{}", {}), ("w.safetensors", b"w", {})], gz=True)
    model = fetch_model(
        ModelRef("flat", tar_url=files_server.endpoint + "/flat.tar.gz"), token=None, cache_dir=tmp_path / "c"
    )
    assert model.files == ("config.json", "w.safetensors")


def test_tarball_without_etag_is_keyed_by_content(files_server: HubServer, tmp_path: Path) -> None:
    files_server.static_etag = False
    files_server.static["/m.tar"] = make_tar(GOOD, gz=True)
    ref = ModelRef("m", tar_url=files_server.endpoint + "/m.tar")
    first = fetch_model(ref, token=None, cache_dir=tmp_path / "c", log=lambda _: None)
    files_server.static["/m.tar"] = make_tar([*GOOD, ("llama/extra.json", b"{}", {})], gz=True)
    second = fetch_model(ref, token=None, cache_dir=tmp_path / "c", log=lambda _: None)
    assert first.path != second.path and "extra.json" in second.files  # never a stale hit


def test_tarball_download_resumes_after_a_drop(files_server: HubServer, tmp_path: Path) -> None:
    files_server.static["/m.tar"] = make_tar(GOOD, gz=False)
    files_server.drop_at, files_server.drop_times = 150_000, 1
    model = fetch_model(ModelRef("m", tar_url=files_server.endpoint + "/m.tar"), token=None, cache_dir=tmp_path / "c")
    assert (model.path / "model.safetensors").read_bytes() == WEIGHTS
    assert [r.range for r in files_server.requests if r.path == "/m.tar"] == [None, "bytes=150000-"]


def test_tarball_http_errors(files_server: HubServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"`model_tar_url` http://127\.0\.0\.1:\d+/missing\.tar answered HTTP 404"):
        fetch_model(ModelRef("m", tar_url=files_server.endpoint + "/missing.tar"), token=None, cache_dir=tmp_path)
    files_server.static["/not-a-tar"] = b"<html>login page</html>"
    with pytest.raises(FetchError, match=r"not a valid \.tar/\.tar\.gz"):
        fetch_model(ModelRef("m", tar_url=files_server.endpoint + "/not-a-tar"), token=None, cache_dir=tmp_path)
    files_server.static["/no-config.tar"] = make_tar([("m/w.safetensors", b"w", {})], gz=False)
    with pytest.raises(FetchError, match=r"has no config\.json"):
        fetch_model(ModelRef("m", tar_url=files_server.endpoint + "/no-config.tar"), token=None, cache_dir=tmp_path)
    files_server.static["/big.tar"] = make_tar(GOOD, gz=False)
    with pytest.raises(PreflightError, match=r"not enough disk space"):
        fetch_model(
            ModelRef("m", tar_url=files_server.endpoint + "/big.tar"),
            token=None,
            cache_dir=tmp_path,
            free_disk_multiplier=1e12,
        )
    assert not [p for p in (tmp_path / "tars").iterdir() if p.is_dir()]


UNSAFE: dict[str, tuple[list[Member], str]] = {
    "absolute path": ([("/tmp/evil.json", b"x", {})], r"`/tmp/evil\.json` is an absolute path"),
    "dot-dot": ([("m/../../evil.json", b"x", {})], r"`m/\.\./\.\./evil\.json` contains `\.\.`"),
    "absolute symlink": (
        [("m/link", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})],
        r"symlink `m/link` points outside it \(`/etc/passwd`\)",
    ),
    "relative symlink out": (
        [("m/link", None, {"type": tarfile.SYMTYPE, "linkname": "../../outside"})],
        r"symlink `m/link` points outside it",
    ),
    # `m/a` is inside when created (`m/b` does not exist yet); `m/b -> .` then makes it point out
    "symlink re-pointed by a later one": (
        [
            ("m/a", None, {"type": tarfile.SYMTYPE, "linkname": "b/c/../../.."}),
            ("m/b", None, {"type": tarfile.SYMTYPE, "linkname": "."}),
        ],
        r"symlink `m/a` points outside it",
    ),
    "write through a re-pointed symlink": (
        [
            ("m/a", None, {"type": tarfile.SYMTYPE, "linkname": "b/c/../../.."}),
            ("m/b", None, {"type": tarfile.SYMTYPE, "linkname": "."}),
            ("m/a/evil", b"x", {}),
        ],
        r"`m/a/evil` would be written outside it",
    ),
    "hardlink out": (
        [("m/hard", None, {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"})],
        r"hardlink target `/etc/passwd` is an absolute path",
    ),
    "hardlink dot-dot": (
        [("m/hard", None, {"type": tarfile.LNKTYPE, "linkname": "../outside"})],
        r"contains `\.\.`",
    ),
    "char device": ([("m/tty", None, {"type": tarfile.CHRTYPE, "devmajor": 5, "devminor": 0})], r"device or FIFO"),
    "block device": ([("m/sda", None, {"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0})], r"device or FIFO"),
    "fifo": ([("m/pipe", None, {"type": tarfile.FIFOTYPE})], r"device or FIFO"),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_tar_members_are_refused(files_server: HubServer, tmp_path: Path, kind: str) -> None:
    members, message = UNSAFE[kind]
    ok: list[Member] = [("m/config.json", b"{}", {}), ("m/w.safetensors", b"w", {})]
    files_server.static["/evil.tar"] = make_tar([*ok, *members], gz=True)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(FetchError, match=f"unsafe member in the model tarball: .*(?:{message})"):
        fetch_model(ModelRef("evil", tar_url=files_server.endpoint + "/evil.tar"), token=None, cache_dir=cache)
    assert not [p for p in (cache / "tars").iterdir() if p.is_dir()]  # nothing published, partial removed
    assert not [p for p in tmp_path.rglob("evil*")]


def test_tarball_download_dropping_every_time_fails_clearly(files_server: HubServer, tmp_path: Path) -> None:
    files_server.static["/m.tar"] = make_tar(GOOD, gz=False)
    files_server.drop_at, files_server.drop_times = 150_000, -1
    with pytest.raises(FetchError, match=r"kept failing after 150000 bytes .*check the network and run again"):
        fetch_model(ModelRef("m", tar_url=files_server.endpoint + "/m.tar"), token=None, cache_dir=tmp_path / "c")
    assert not [p for p in (tmp_path / "c" / "tars").iterdir() if p.is_dir()]


# -- links out of a local model directory (issue #14, item 5) -----------------------------------


def test_links_out_of_a_local_model_dir_are_refused(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    outside = tmp_path / "elsewhere" / "shadow"
    outside.parent.mkdir()
    outside.write_text("root:$6$secret-hash")
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to("/etc/passwd")
    (model / "vocab.txt").symlink_to(outside)
    (model / "sub" / "up").symlink_to("../../elsewhere")  # a directory link out, never followed
    for call in (
        lambda: check_ref(ModelRef(str(model))),  # plan time
        lambda: fetch_model(ModelRef(str(model)), token=None, cache_dir=tmp_path / "c"),  # build time
    ):
        with pytest.raises(ConfigError) as info:
            call()
        msg = str(info.value)
        assert f"local model directory {model} has links that resolve outside it" in msg
        assert "`tokenizer.json` -> /etc/passwd" in msg
        assert f"`vocab.txt` -> {outside}" in msg
        assert f"`sub/up` -> {outside.parent}" in msg
        assert "copy the real files into the directory" in msg


def test_links_inside_a_local_model_dir_are_fine(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    (model / "tok.json").symlink_to("tokenizer.json")
    (model / "sub" / "cfg.json").symlink_to("../config.json")
    (model / "alias").symlink_to("sub")
    via = tmp_path / "via-link"
    via.symlink_to(model)  # the model dir itself may be reached through a link
    assert check_ref(ModelRef(str(via))) == "local"
    got = fetch_model(ModelRef(str(via)), token=None, cache_dir=tmp_path / "c")
    assert "tok.json" in got.files and [p.name for p in tokenizer_files(got.path)].count("tok.json") == 0


def test_a_huggingface_hub_cache_snapshot_is_a_valid_local_model(
    hub_server: HubServer, tmp_path: Path, run_cli: CliRun, tiny_model: Callable[..., Path]
) -> None:
    """A snapshot as huggingface_hub itself lays it out: ``snapshots/<sha>/<file> -> ../../blobs/<etag>``."""
    from huggingface_hub import snapshot_download

    src = tiny_model("llama")
    files = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()}
    sha = hub_server.add_repo("org/tiny-llama", files)
    snap = Path(snapshot_download("org/tiny-llama", cache_dir=tmp_path / "hf", endpoint=hub_server.endpoint))
    assert snap == tmp_path / "hf" / "models--org--tiny-llama" / "snapshots" / sha
    link = snap / "tokenizer_config.json"
    assert link.is_symlink() and os.readlink(link).startswith("../../blobs/")  # what huggingface_hub made
    assert check_ref(ModelRef(str(snap))) == "local"

    cfg = tmp_path / "snap.yaml"
    cfg.write_text(
        f"model: {{id: {snap}}}\ntrtllm: {{example: llama}}\nsteps:\n"
        "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16}}\n"
        "  - {name: build, command: trtllm-build, args: {max_batch_size: 4}}\n"
    )
    out = tmp_path / "e.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out))
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        packed = tar.extractfile("tokenizer_config.json")
        assert packed is not None and packed.read() == files["tokenizer_config.json"]

    # ...but a snapshot's link into some other folder is not one of its blobs
    (snap / "vocab.txt").symlink_to(tmp_path / "hf" / "models--org--tiny-llama" / "refs" / "main")
    with pytest.raises(ConfigError, match=r"`vocab.txt` -> .*/refs/main"):
        check_ref(ModelRef(str(snap)))


def test_cli_refuses_a_model_dir_with_links_out_before_any_step(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    good = tiny_model("llama", name="good")
    model = tiny_model("llama")
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to("/etc/passwd")

    def config(model_dir: Path) -> str:
        path = tmp_path / f"{model_dir.name}.yaml"
        path.write_text(
            f"model: {{id: {model_dir}}}\ntrtllm: {{example: llama}}\nsteps:\n"
            "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16}}\n"
            "  - {name: build, command: trtllm-build, args: {max_batch_size: 4}}\n"
        )
        return str(path)

    out = str(tmp_path / "e.tar.gz")
    for args in (
        ["plan", config(model)],
        ["build", config(model), "-o", out],
        ["build", config(good), "--model-dir", str(model), "-o", out],
    ):
        res = run_cli(*args)
        assert res.returncode == 2, res.stderr
        assert "has links that resolve outside it: `tokenizer.json` -> /etc/passwd" in res.stderr
    assert not (tmp_path / "e.tar.gz").exists()
    log = tmp_path / "standin.log"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert not [c for c in calls if "--help" not in c["argv"] and c["script"] != "nvidia-smi"], "a step ran"
