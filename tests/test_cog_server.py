"""End to end through the real Cog HTTP server (coglet), as a user's curl would drive it.

Each server configuration is one ``python -m cog.server.http`` process (module-scoped), run from the
repository root (coglet reads ``.cog/openapi_schema.json`` from there) with the stand-in TensorRT-LLM
(``TRTLLM_DIR`` + ``PATH``). One loopback helper serves the configs (GET), receives webhooks (POST)
and uploads (PUT), like the ``python3 -m http.server`` of the cog-trt-llm workflow.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import DEFAULT_RELEASE, ROOT, TRTLLM_DIR, standin_path

TOKEN = "hf_e2eSECRETtoken0123456789abcdef"
TERMINAL = {"succeeded", "failed", "canceled"}


# --- loopback helper: configs, webhooks, uploads ------------------------------------------------------


class Loopback:
    """GET /files/<name> serves ``files_dir``; POST /hooks records webhooks; PUT /upload/<name> stores bodies."""

    def __init__(self, files_dir: Path) -> None:
        self.files_dir = files_dir
        self.hooks: list[dict[str, Any]] = []
        self.raw_hooks: list[bytes] = []
        self.uploads: dict[str, bytes] = {}
        self.cond = threading.Condition()
        helper = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                path = helper.files_dir / self.path.removeprefix("/files/")
                if not self.path.startswith("/files/") or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/yaml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self._body()
                with helper.cond:
                    helper.raw_hooks.append(body)
                    helper.hooks.append(json.loads(body))
                    helper.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_PUT(self) -> None:
                name = self.path.removeprefix("/upload/")
                body = self._body()
                with helper.cond:
                    helper.uploads[name] = body
                    helper.cond.notify_all()
                self.send_response(201)
                self.send_header("Location", f"{helper.url}/files/uploaded/{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_final_hook(self, prediction_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Every webhook of ``prediction_id``, once one with a terminal status arrived, that one last.

        This server answers each POST on its own thread, and a 'processing' update coglet sent just
        before the end can be appended after the terminal one (seen in a full run of the suite).
        """
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                mine = [h for h in self.hooks if h.get("id") == prediction_id]
                final = [h for h in mine if h.get("status") in TERMINAL]
                if final:
                    return [h for h in mine if h.get("status") not in TERMINAL] + final
                left = deadline - time.monotonic()
                assert left > 0, f"no final webhook for {prediction_id}; got {[h.get('status') for h in mine]}"
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the Cog server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CogServer:
    """``python -m cog.server.http`` in its own process group (server + worker), killed as a group."""

    def __init__(self, home: Path, env: dict[str, str], *, upload_url: str | None = None) -> None:
        self.home = home
        self.tmp = home / "tmp"
        self.tmp.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        self.standin_log = home / "standin.log"
        full = {
            k: v for k, v in os.environ.items() if not k.startswith("STANDIN_") and k not in {"HF_TOKEN", "HF_ENDPOINT"}
        }
        full.update(
            {
                # the worker is started as a bare `python`: the venv's must come first after the stand-ins
                "PATH": standin_path(),
                "TRTLLM_DIR": str(TRTLLM_DIR),
                "TRTLLM_BUILDER_CACHE": str(home / "cache"),
                "TMPDIR": str(self.tmp),
                "HOME": str(home),
                "STANDIN_LOG": str(self.standin_log),
                "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
                "PORT": str(self.port),
            }
        )
        full.update(env)
        argv = [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]
        if upload_url:
            argv += ["--upload-url", upload_url]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=full, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.health = self._wait_started()

    def _wait_started(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"cog server exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                health: dict[str, Any] = requests.get(f"{self.url}/health-check", timeout=2).json()
            except requests.RequestException:
                health = {}
            if health.get("status") in {"READY", "SETUP_FAILED"}:
                return health
            time.sleep(0.1)
        pytest.fail(f"cog server not ready after {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    @property
    def predictions_root(self) -> Path:
        return self.tmp / "trtllm-builder-predictions"

    def prediction_dirs(self) -> list[Path]:
        root = self.predictions_root
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def steps_run(self) -> list[str]:
        """Scripts that did work: not setup's ``nvidia-smi`` query, not ``--help`` (the planner reads parsers)."""
        lines = self.standin_log.read_text().splitlines() if self.standin_log.is_file() else []
        records = [json.loads(line) for line in lines]
        return [r["script"] for r in records if r["script"] != "nvidia-smi" and "--help" not in r["argv"]]

    def post(
        self, inputs: dict[str, Any], *, retries: int = 20, headers: dict[str, str] | None = None, **body: Any
    ) -> requests.Response:
        """POST /predictions; 409 (the one slot is still busy finishing the last one) is retried."""
        for _ in range(retries):
            r = requests.post(f"{self.url}/predictions", json={"input": inputs, **body}, headers=headers, timeout=60)
            if r.status_code != 409:
                return r
            time.sleep(0.2)
        return r

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        r = self.post(inputs)
        assert r.status_code == 200, r.text
        reply: dict[str, Any] = r.json()
        return reply

    def stop(self) -> None:
        with_group = [signal.SIGTERM, signal.SIGKILL]
        for sig in with_group:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


# --- fixtures -----------------------------------------------------------------------------------------


def write_config(path: Path, model: Path, *, first_step: str = "convert") -> None:
    """Convert (or quantize) then build, the smallest engine the stand-ins make."""
    first = (
        ["  - name: convert", "    script: convert_checkpoint.py"]
        if first_step == "convert"
        else ["  - name: quantize", "    example: quantization", "    script: quantize.py"]
    )
    lines = [
        "model:",
        f"  id: {model}",
        "trtllm:",
        "  example: gpt",
        "steps:",
        *first,
        "    args:",
        "      dtype: float16",
        "  - name: build",
        "    command: trtllm-build",
        "    args:",
        "      max_batch_size: 1",
        "      max_input_len: 32",
        "      max_seq_len: 64",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class World:
    def __init__(self, root: Path) -> None:
        from modelgen import make_tiny_model

        self.root = root
        self.model = make_tiny_model(root / "models" / "tiny-gpt2", "gpt2")
        self.configs = root / "configs"
        self.configs.mkdir()
        write_config(self.configs / "good.yaml", self.model)
        # the main server fails quantize.py (STANDIN_FAIL): a step that fails at run time
        write_config(self.configs / "fails.yaml", self.model, first_step="quantize")
        (self.configs / "invalid.yaml").write_text(f"model:\n  id: {self.model}\nstepz: []\n", encoding="utf-8")
        self.loopback = Loopback(self.configs)

    def config_url(self, name: str) -> str:
        return f"{self.loopback.url}/files/{name}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("cog-e2e"))
    yield w
    w.loopback.close()


@pytest.fixture(scope="module")
def start_server(world: World) -> Iterator[Callable[..., CogServer]]:
    started: list[CogServer] = []

    def start(name: str, env: dict[str, str] | None = None, *, upload_url: str | None = None) -> CogServer:
        server = CogServer(world.root / f"server-{name}", env or {}, upload_url=upload_url)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(start_server: Callable[..., CogServer]) -> CogServer:
    s = start_server("main", {"STANDIN_FAIL": "quantize.py:3"})
    assert s.health["status"] == "READY", s.health
    return s


# --- helpers ------------------------------------------------------------------------------------------


def decode_data_uri(uri: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert uri.startswith(prefix), uri[:80]
    return base64.b64decode(uri[len(prefix) :])


def check_archive(data: bytes, model: Path) -> dict[str, Any]:
    """Unpack ``data``: engine files, tokenizer and a manifest whose checksums match. Returns the manifest."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    manifest: dict[str, Any] = json.loads(files.pop("manifest.json"))
    assert {"config.json", "rank0.engine", "tokenizer.json", "vocab.json", "merges.txt"} <= set(files)
    assert files["rank0.engine"][:4] == b"ftrt"
    assert files["tokenizer.json"] == (model / "tokenizer.json").read_bytes()
    assert {f["path"]: (f["sha256"], f["size"]) for f in manifest["files"]} == {
        name: (hashlib.sha256(body).hexdigest(), len(body)) for name, body in files.items()
    }
    assert [s["name"] for s in manifest["steps"]] == ["convert", "build"]
    assert manifest["model"]["source"] == "local"
    return manifest


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie counts as gone
    except FileNotFoundError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} (after {timeout} s)"
        time.sleep(0.05)


# --- tests --------------------------------------------------------------------------------------------


def test_sync_prediction_returns_the_archive_inline(server: CogServer, world: World) -> None:
    reply = server.predict({"config": world.config_url("good.yaml"), "hf_token": TOKEN})
    assert reply["status"] == "succeeded", reply.get("error")
    data = decode_data_uri(reply["output"], "application/gzip")
    manifest = check_archive(data, world.model)
    logs = reply["logs"]
    for expected in (
        "==> [1/2] convert:",
        f"[convert] [TensorRT-LLM] TensorRT-LLM version: {DEFAULT_RELEASE}",
        "<== convert finished in",
        "==> [2/2] build:",
        "[build] ",
        "<== build finished in",
        "archive: ",
    ):
        assert expected in logs
    metrics = reply["metrics"]
    assert metrics["archive_bytes"] == len(data)
    assert metrics["step_convert_seconds"] >= 0 and metrics["step_build_seconds"] >= 0
    assert TOKEN not in json.dumps(reply) and TOKEN.encode() not in data and TOKEN not in json.dumps(manifest)


def test_earlier_predictions_are_cleaned_up(server: CogServer, world: World) -> None:
    server.predict({"config": world.config_url("good.yaml")})
    first = server.prediction_dirs()
    assert len(first) == 1 and (first[0] / "out" / "engine.tar.gz").is_file()
    assert not (first[0] / "work").exists()  # build() removed it; only the returned archive waits
    reply = server.predict({"config": world.config_url("good.yaml"), "dry_run": True})
    assert reply["status"] == "succeeded"
    second = server.prediction_dirs()
    assert len(second) == 1 and second != first


def test_upload_url_puts_the_archive(start_server: Callable[..., CogServer], world: World) -> None:
    up = start_server("upload", upload_url=f"{world.loopback.url}/upload/")
    reply = up.predict({"config": world.config_url("good.yaml")})
    assert reply["status"] == "succeeded", reply.get("error")
    assert reply["output"] == f"{world.loopback.url}/files/uploaded/engine.tar.gz"
    data = world.loopback.uploads["engine.tar.gz"]
    check_archive(data, world.model)
    assert reply["metrics"]["archive_bytes"] == len(data)


def test_async_prediction_streams_step_logs_to_the_webhook(
    start_server: Callable[..., CogServer], world: World
) -> None:
    # each stand-in script takes 1.5 s, so webhooks (about one a second) are sent while steps run
    slow = start_server("slow", {"STANDIN_SLEEP": "1.5"})
    r = slow.post(
        {"config": world.config_url("good.yaml"), "hf_token": TOKEN},
        id="async-1",
        webhook=f"{world.loopback.url}/hooks",
        headers={"Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    hooks = world.loopback.wait_final_hook("async-1")
    processing = [h for h in hooks if h["status"] == "processing"]
    assert any("[convert] " in h["logs"] and "<== build finished" not in h["logs"] for h in processing), [
        h["logs"][-200:] for h in processing
    ]
    final = hooks[-1]
    assert final["status"] == "succeeded", final.get("error")
    check_archive(decode_data_uri(final["output"], "application/gzip"), world.model)
    assert "<== build finished in" in final["logs"]
    assert not any(TOKEN.encode() in raw for raw in world.loopback.raw_hooks)


def test_cancel_during_a_hanging_step(start_server: Callable[..., CogServer], world: World) -> None:
    pidfile = world.root / "hang.pids"
    hang = start_server("hang", {"STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)})
    r = hang.post(
        {"config": world.config_url("good.yaml")},
        id="cancel-1",
        webhook=f"{world.loopback.url}/hooks",
        headers={"Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 20, "the build step never hung")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(alive(p) for p in pids)
    assert requests.post(f"{hang.url}/predictions/cancel-1/cancel", timeout=10).status_code == 200
    final = world.loopback.wait_final_hook("cancel-1", timeout=15)[-1]
    assert final["status"] == "canceled"
    assert "[build] stopping: terminating the step's process group" in final["logs"]
    wait_until(lambda: not any(alive(p) for p in pids), 5, "the step's processes outlived the cancel")
    wait_until(lambda: hang.prediction_dirs() == [], 5, "the canceled prediction's work dir was not removed")
    assert requests.get(f"{hang.url}/health-check", timeout=5).json()["status"] == "READY"


def test_invalid_config_fails_with_the_validation_message(server: CogServer, world: World) -> None:
    reply = server.predict({"config": world.config_url("invalid.yaml")})
    assert reply["status"] == "failed"
    assert "ConfigError: config is invalid:" in reply["error"]
    assert "stepz: unknown key; did you mean `steps`?" in reply["error"]
    assert server.prediction_dirs() == []


def test_failed_step_error_names_step_code_and_output(server: CogServer, world: World) -> None:
    reply = server.predict({"config": world.config_url("fails.yaml")})
    assert reply["status"] == "failed"
    error = reply["error"]
    assert "StepFailed: step `quantize` exited with code 3" in error
    assert "command: " in error and "quantize.py --model_dir" in error
    assert "last 6 lines of output:" in error
    assert "RuntimeError: standin: simulated failure of quantize.py (STANDIN_FAIL)" in error  # the step's own tail
    assert server.prediction_dirs() == []


def test_wrong_input_type_is_rejected_with_422(server: CogServer, world: World) -> None:
    r = server.post({"config": world.config_url("good.yaml"), "dry_run": "yes please"})
    assert r.status_code == 422
    assert any("dry_run" in d["loc"] for d in r.json()["detail"])
    r = server.post({"dry_run": True})
    assert r.status_code == 422
    assert any("config" in json.dumps(d) for d in r.json()["detail"])


def test_openapi_schema_is_served(server: CogServer) -> None:
    r = requests.get(f"{server.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.json() == json.loads((ROOT / ".cog" / "openapi_schema.json").read_text())


def test_missing_trtllm_tree_fails_setup(start_server: Callable[..., CogServer], world: World) -> None:
    broken = start_server("broken", {"TRTLLM_DIR": str(world.root / "no-trtllm")})
    assert broken.health["status"] == "SETUP_FAILED"
    assert "SetupError: no TensorRT-LLM examples tree at" in broken.health["setup"]["logs"]
    assert "no-trtllm/examples (from TRTLLM_DIR)" in broken.health["setup"]["logs"]
    assert broken.post({"config": world.config_url("good.yaml")}).status_code == 503


def test_dry_run_returns_the_plan_and_builds_nothing(server: CogServer, world: World) -> None:
    before = server.steps_run()
    reply = server.predict({"config": world.config_url("good.yaml"), "dry_run": True})
    assert reply["status"] == "succeeded", reply.get("error")
    doc = json.loads(decode_data_uri(reply["output"], "application/json"))
    assert doc["dry_run"] is True
    assert [s["name"] for s in doc["plan"]["steps"]] == ["convert", "build"]
    assert doc["model"] == {"id": str(world.model), "source": "local", "size_bytes": doc["model"]["size_bytes"]}
    assert server.steps_run() == before
    assert [p.name for d in server.prediction_dirs() for p in (d / "out").iterdir()] == ["plan.json"]


# --- quiet steps, stop signals, bounded logs (issues #13, #14 items 6, 13) ---------------------------


def test_quiet_step_has_its_last_lines_and_a_heartbeat_in_a_webhook(
    start_server: Callable[..., CogServer], world: World
) -> None:
    """The real intervals (20 s, then every 30 s): coglet sends a logs webhook only when a new line
    arrives, so without the heartbeat the step's last lines wait unseen while it works silently."""
    pidfile = world.root / "quiet.pids"
    quiet = start_server("quiet", {"STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)})
    r = quiet.post(
        {"config": world.config_url("good.yaml")},
        id="quiet-1",
        webhook=f"{world.loopback.url}/hooks",
        headers={"Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 30, "the build step never started")
    silent_since = time.monotonic()  # the step printed its last line just before writing the pidfile
    last_line = "[build] [standin] trtllm-build: working (STANDIN_HANG)"

    def flushed() -> bool:
        with world.loopback.cond:
            return any(
                last_line in h["logs"] and "[build] still running: " in h["logs"]
                for h in world.loopback.hooks
                if h.get("id") == "quiet-1" and h.get("logs")
            )

    wait_until(flushed, 40, "no webhook carried the quiet step's last lines and a heartbeat")
    waited = time.monotonic() - silent_since
    assert 19 < waited < 40, waited  # the first heartbeat comes after 20 s of silence, not before
    hook = next(h for h in reversed(world.loopback.hooks) if h.get("id") == "quiet-1" and "still running" in h["logs"])
    beat = next(line for line in hook["logs"].splitlines() if "[build] still running: " in line)
    assert re.fullmatch(
        r"\[build\] still running: \d+ s, no output for 2\d s, output dir 0 B, peak RSS .+, GPU memory .+", beat
    ), beat
    assert requests.post(f"{quiet.url}/predictions/quiet-1/cancel", timeout=10).status_code == 200
    world.loopback.wait_final_hook("quiet-1", timeout=15)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_stop_signal_to_the_server_group_stops_the_build(
    start_server: Callable[..., CogServer], world: World, sig: signal.Signals
) -> None:
    """As ``kill -TERM -<pgid>`` (or a hang-up) reaches server and worker: the worker stops the step's
    tree and deletes the prediction's files like a cancel, then exits."""
    pidfile = world.root / f"stop-{sig.name}.pids"
    srv = start_server(f"stop-{sig.name}", {"STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)})
    r = srv.post({"config": world.config_url("good.yaml")}, id=f"stop-{sig.name}", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 30, "the build step never started")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert srv.prediction_dirs()
    os.killpg(srv.proc.pid, sig)
    wait_until(lambda: not any(alive(p) for p in pids), 5, "the step's processes outlived the signal")
    wait_until(lambda: srv.prediction_dirs() == [], 10, "the prediction's files were not removed")
    srv.proc.wait(timeout=20)
    wait_until(lambda: not _group_alive(srv.proc.pid), 10, "the worker did not exit")


def test_sigterm_to_the_server_alone_leaves_no_step_running(
    start_server: Callable[..., CogServer], world: World
) -> None:
    """``docker stop`` signals only the server: coglet ends the worker after its 10 s shutdown wait,
    and the step's supervisor then stops the step's tree (the next server sweeps the files)."""
    pidfile = world.root / "stop-server.pids"
    srv = start_server("stop-server", {"STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)})
    r = srv.post({"config": world.config_url("good.yaml")}, id="stop-server", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 30, "the build step never started")
    pids = [int(p) for p in pidfile.read_text().split()]
    os.kill(srv.proc.pid, signal.SIGTERM)
    srv.proc.wait(timeout=30)
    wait_until(lambda: not any(alive(p) for p in pids), 5, "the step's processes outlived the server")
    wait_until(lambda: not _group_alive(srv.proc.pid), 10, "the worker did not exit")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_a_flood_of_output_reaches_the_logs_bounded_and_the_archive_whole(
    start_server: Callable[..., CogServer], world: World
) -> None:
    n = 30_000
    chatty = start_server("chatty", {"STANDIN_CHATTY": f"convert_checkpoint.py:{n}"})
    reply = chatty.predict({"config": world.config_url("good.yaml")})
    assert reply["status"] == "succeeded", reply.get("error")
    logs = reply["logs"]
    shown = [line for line in logs.splitlines() if line.startswith("[convert] [standin] convert_checkpoint.py: line ")]
    assert 500 <= len(shown) < 1000  # the first 500, then 5 lines/s
    assert shown[:2] == [
        "[convert] [standin] convert_checkpoint.py: line 0",
        "[convert] [standin] convert_checkpoint.py: line 1",
    ]
    assert re.search(
        r"\[convert\] \d+ of \d+ output lines were not shown \(the log is bounded\); every line is kept in build\.log",
        logs,
    )
    assert len(logs) < 200_000
    data = decode_data_uri(reply["output"], "application/gzip")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile("build.log")
        assert member is not None
        full = member.read().decode()
    kept = [line for line in full.splitlines() if line.startswith("[convert] [standin] convert_checkpoint.py: line ")]
    assert len(kept) == n and kept[-1].endswith(f"line {n - 1}")
    assert "==> [2/2] build:" in full and "<== build finished in" in full


def test_download_pack_and_upload_progress_reach_the_prediction_logs(
    start_server: Callable[..., CogServer], world: World
) -> None:
    """A Hub model (the loopback hub), packed and uploaded to S3 (moto on loopback): each transfer's
    progress lines are in the prediction's logs, the closing line of each included, no carriage return."""
    import boto3
    from hubserver import HubServer
    from test_upload import start_moto, stop

    moto, endpoint = start_moto()
    try:
        with HubServer() as hub:
            hub.add_repo("org/tiny-gpt2", {p.name: p for p in world.model.iterdir() if p.is_file()})
            boto3.client(
                "s3", endpoint_url=endpoint, aws_access_key_id="AKIAPROGRESS", aws_secret_access_key="s" * 40,
                region_name="us-east-1",
            ).create_bucket(Bucket="engines")  # fmt: skip
            write_config(world.configs / "hub.yaml", Path("org/tiny-gpt2"))
            progress = start_server("progress", {"HF_ENDPOINT": hub.endpoint, "AWS_DEFAULT_REGION": "us-east-1"})
            reply = progress.predict(
                {
                    "config": world.config_url("hub.yaml"),
                    "upload_url": "s3://engines/progress",
                    "aws_access_key_id": "AKIAPROGRESS",
                    "aws_secret_access_key": "s" * 40,
                    "s3_endpoint_url": endpoint,
                }
            )
    finally:
        stop(moto)
    assert reply["status"] == "succeeded", reply.get("error")
    lines = reply["logs"].splitlines()
    for phase in ("download", "pack", "upload"):
        closing = [ln for ln in lines if re.match(rf"^{phase}: [\d.]+/[\d.]+ [kMG]?B \(100%\) in ", ln)]
        assert closing, f"no closing {phase} line in the logs:\n" + "\n".join(lines[-40:])
    assert "\r" not in reply["logs"]
    assert "s" * 40 not in reply["logs"]
