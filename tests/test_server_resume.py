"""The Cog server killed mid-build (SIGKILL, as a crashed or preempted machine): the step it was
running dies with it (nobody else kills it), and a new server sharing the cache resumes the same
config from the step cache, never running the step beside what is left of the old one."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from collections.abc import Callable

from test_cog_server import (  # noqa: F401
    CogServer,
    World,
    alive,
    decode_data_uri,
    start_server,
    wait_until,
    world,
)


def test_killed_server_resumes_from_the_cache(start_server: Callable[..., CogServer], world: World) -> None:  # noqa: F811
    cache = world.root / "shared-cache"
    pidfile = world.root / "resume.pids"
    first = start_server(
        "resume-1",
        {
            "TRTLLM_BUILDER_CACHE": str(cache),
            "STANDIN_HANG": "trtllm-build",
            "STANDIN_HANG_TERM": "ignore",  # slow to die: SIGKILL only after the supervisor's grace period
            "STANDIN_PIDFILE": str(pidfile),
        },
    )
    r = first.post({"config": world.config_url("good.yaml")}, id="resume-1", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 30, "the build step never started")
    assert first.steps_run() == ["convert_checkpoint.py", "trtllm-build"]
    leftovers = [int(p) for p in pidfile.read_text().split()]
    # the machine's server goes away: server and worker at once; the step is in a session of its own
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)

    second = start_server("resume-2", {"TRTLLM_BUILDER_CACHE": str(cache)})
    assert second.health["status"] == "READY"
    r = second.post(
        {"config": world.config_url("good.yaml")},
        id="resume-2",
        webhook=f"{world.loopback.url}/hooks",
        headers={"Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    overlap = False
    deadline = time.monotonic() + 60
    while not any(
        h.get("id") == "resume-2" and h.get("status") in {"succeeded", "failed"} for h in world.loopback.hooks
    ):
        assert time.monotonic() < deadline, "the resumed build did not finish"
        # the log first, then the processes: a leftover alive after the new step started lived beside it
        started = "trtllm-build" in second.steps_run()
        overlap = overlap or (started and any(alive(p) for p in leftovers))
        time.sleep(0.01)
    assert not overlap, "the resumed build ran its step beside the killed server's"
    assert not any(alive(p) for p in leftovers)
    reply = world.loopback.wait_final_hook("resume-2")[-1]
    assert reply["status"] == "succeeded", reply.get("error")
    assert second.steps_run() == ["trtllm-build"]  # the convert step was not run again
    assert "convert: reused from the step cache" in reply["logs"]
    assert "[build] waiting for processes of an earlier run of this step to stop (pid " in reply["logs"]
    data = decode_data_uri(reply["output"], "application/gzip")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert [(s["name"], s["cached"]) for s in manifest["steps"]] == [("convert", True), ("build", False)]
    # nothing half-written was left in the cache by the killed build
    entries = [p.name for p in (cache / "steps").iterdir() if p.is_dir()]
    assert not [e for e in entries if e.startswith(".tmp-")]


def test_sigkilled_server_takes_the_step_with_it(start_server: Callable[..., CogServer], world: World) -> None:  # noqa: F811
    pidfile = world.root / "orphan.pids"
    srv = start_server("orphan", {"STANDIN_HANG": "trtllm-build", "STANDIN_PIDFILE": str(pidfile)})
    r = srv.post({"config": world.config_url("good.yaml")}, id="orphan-1", headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait_until(lambda: pidfile.is_file() and len(pidfile.read_text().split()) == 2, 30, "the build step never started")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(alive(p) for p in pids)
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=10)
    wait_until(lambda: not any(alive(p) for p in pids), 5, "the step outlived the SIGKILLed server (an orphan)")
