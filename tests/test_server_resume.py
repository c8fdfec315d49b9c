"""The Cog server killed mid-build (SIGKILL, as a crashed or preempted machine): a new server
sharing the cache resumes the same config from the step cache instead of starting over."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tarfile
from collections.abc import Callable

from test_cog_server import CogServer, World, decode_data_uri, start_server, wait_until, world  # noqa: F401


def test_killed_server_resumes_from_the_cache(start_server: Callable[..., CogServer], world: World) -> None:  # noqa: F811
    cache = world.root / "shared-cache"
    pidfile = world.root / "resume.pids"
    first = start_server(
        "resume-1",
        {"TRTLLM_BUILDER_CACHE": str(cache), "STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)},
    )
    r = first.post({"config": world.config_url("good.yaml")}, id="resume-1", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 30, "the build step never started")
    assert first.steps_run() == ["convert_checkpoint.py", "trtllm-build"]
    # the machine goes away: the server, its worker and the step, all at once
    os.killpg(first.proc.pid, signal.SIGKILL)
    for pid in map(int, pidfile.read_text().split()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    first.proc.wait(timeout=10)

    second = start_server("resume-2", {"TRTLLM_BUILDER_CACHE": str(cache)})
    assert second.health["status"] == "READY"
    reply = second.predict({"config": world.config_url("good.yaml")})
    assert reply["status"] == "succeeded", reply.get("error")
    assert second.steps_run() == ["trtllm-build"]  # the convert step was not run again
    assert "convert: reused from the step cache" in reply["logs"]
    data = decode_data_uri(reply["output"], "application/gzip")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert [(s["name"], s["cached"]) for s in manifest["steps"]] == [("convert", True), ("build", False)]
    # nothing half-written was left in the cache by the killed build
    entries = [p.name for p in (cache / "steps").iterdir() if p.is_dir()]
    assert not [e for e in entries if e.startswith(".tmp-")]
