"""read_config_text: http(s) URLs (against a real server on 127.0.0.1) and local paths."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from slowserver import slow_server

from trtllm_builder.config.source import MAX_CONFIG_BYTES, read_config_text
from trtllm_builder.errors import ConfigError, FetchError

YAML = "model:\n  id: meta-llama/Llama-3.1-8B-Instruct  # café\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sent: dict[str, int] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/ok.yaml":
            return self._send(200, YAML.encode(), Content_Type="application/yaml")
        if path == "/bom.yaml":
            return self._send(200, b"\xef\xbb\xbf" + YAML.encode())
        if path == "/exactly-the-cap.yaml":
            return self._send(200, b"#" * MAX_CONFIG_BYTES)
        if path == "/binary":
            return self._send(200, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
        if path == "/latin1.yaml":
            return self._send(200, "name: café\n".encode("latin-1"))
        if path == "/error":
            return self._send(500, b"oops")
        if path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(50 << 30))
            self.end_headers()
            return None
        if path in ("/endless", "/slow", "/stall"):
            self.send_response(200)
            self.send_header("Connection", "close")  # no length: the body ends when the server closes
            self.end_headers()
            self.close_connection = True
            chunk = b"a: b\n" * 1000
            deadline = time.monotonic() + 20
            sent = 0
            try:
                while time.monotonic() < deadline:
                    if path == "/endless":
                        self.wfile.write(chunk)
                        sent += len(chunk)
                    elif path == "/slow":
                        self.wfile.write(b"a")
                        sent += 1
                        time.sleep(0.2)
                    else:
                        time.sleep(0.1)
            except OSError:
                pass
            _Handler.sent[path] = sent
            return None
        return self._send(404, b"not found")


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_200(server: str) -> None:
    assert read_config_text(server + "/ok.yaml") == YAML
    assert read_config_text(server + "/bom.yaml") == YAML
    assert len(read_config_text(server + "/exactly-the-cap.yaml")) == MAX_CONFIG_BYTES


def test_http_404_names_the_url_and_status_but_not_the_signature(server: str) -> None:
    with pytest.raises(ConfigError, match=r"config URL http://127\.0\.0\.1:\d+/nope\.yaml\S* answered HTTP 404") as e:
        read_config_text(server + "/nope.yaml?X-Amz-Signature=s3cr3t")
    assert "s3cr3t" not in str(e.value)


def test_http_500_is_a_fetch_error(server: str) -> None:
    with pytest.raises(FetchError, match="answered HTTP 500"):
        read_config_text(server + "/error")


def test_endless_body_stops_at_the_cap_quickly(server: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"larger than 1 MiB"):
        read_config_text(server + "/endless")
    assert time.monotonic() - start < 3


def test_declared_oversize_fails_without_reading(server: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"larger than 1 MiB"):
        read_config_text(server + "/declared-huge")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("path", ["/slow", "/stall"])
def test_slow_or_stalled_server_times_out(server: str, path: str) -> None:
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 1 s|did not answer within 1 s"):
        read_config_text(server + path, timeout=1.0)
    assert time.monotonic() - start < 3


def test_binary_and_non_utf8_content(server: str) -> None:
    with pytest.raises(ConfigError, match=r"is binary, not YAML text"):
        read_config_text(server + "/binary")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text"):
        read_config_text(server + "/latin1.yaml")


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"cannot fetch config URL http://127\.0\.0\.1:9/x\.yaml"):
        read_config_text("http://127.0.0.1:9/x.yaml", timeout=2)


def test_local_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "build.yaml"
    cfg.write_text(YAML, encoding="utf-8")
    assert read_config_text(cfg) == YAML
    assert read_config_text(str(cfg)) == YAML
    assert read_config_text(f"file://{cfg}") == YAML
    with pytest.raises(ConfigError, match=r"config file .*missing\.yaml does not exist"):
        read_config_text(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"is not a file"):
        read_config_text(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=r"larger than 1 MiB"):
        read_config_text(big)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(ConfigError, match=r"binary|UTF-8"):
        read_config_text(bad)


def test_unsupported_scheme() -> None:
    with pytest.raises(ConfigError, match=r"unsupported scheme `s3://`"):
        read_config_text("s3://bucket/build.yaml")


# --- the deadline covers the whole request (issue #14, item 10) ------------------------------------


def test_trickled_headers_hit_the_deadline() -> None:
    """A byte of header every 0.2 s: no single read times out, the request as a whole must."""
    with slow_server("headers", interval=0.2) as srv:
        start = time.monotonic()
        with pytest.raises(
            FetchError, match=r"did not answer within 1 s \(the deadline covers connecting, the headers"
        ):
            read_config_text(srv.url + "/config.yaml?X-Amz-Signature=s3cr3tsig", timeout=1.0)
        took = time.monotonic() - start
    assert 0.9 < took < 3, took


def test_trickled_body_hits_the_deadline_and_is_never_taken_as_the_config() -> None:
    with slow_server("body", interval=0.05, body=b"model_id: x\n" * 100) as srv:
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"did not answer within 1 s"):
            read_config_text(srv.url + "/config.yaml", timeout=1.0)
    assert time.monotonic() - start < 3


def test_plan_with_a_config_server_that_trickles_headers_ends(
    monkeypatch: pytest.MonkeyPatch, standin_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from trtllm_builder import cli
    from trtllm_builder.config import source as configsource

    monkeypatch.setattr(configsource, "CONFIG_TIMEOUT", 1.0)
    with slow_server("headers", interval=0.2) as srv:
        start = time.monotonic()
        code = cli.main(["plan", srv.url + "/config.yaml"])
        took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and "did not answer within 1 s" in err, err
    assert took < 4, took
