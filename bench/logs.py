"""How many lines a second of a step's output the CLI gets through, before and after bounded logs.

A step prints ``--lines`` lines (300k: the issue's 30 MB flood) as fast as it can. Each mode runs
that step in a child process whose stderr is a pipe this script drains, as a terminal or a CI log
would, and the child reports how long the step took from start to end:

* ``before``: the runner as of ``--baseline-rev`` (git), forwarding every line to stderr the way
  the CLI did (one flushed ``print`` per line); left out if git or the revision is not available;
* ``unbounded``: this runner, every line still forwarded (the secret-masking and supervision costs
  without the bound);
* ``after``: this runner through the build log, as ``trtllm-builder build`` runs a step now: every
  line to ``build.log``, a bounded, rate-limited stream to stderr.

Prints lines/s per mode and the ratios against ``before`` (else ``unbounded``), measured in this run.

    python bench/logs.py [--lines 300000] [--rounds 3] [--baseline-rev 69bec57]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHATTY = (  # what STANDIN_CHATTY prints (tests/standin/README.md)
    "import sys\n"
    "n = int(sys.argv[1])\n"
    "for s in range(0, n, 10000):\n"
    "    lines = (f'[standin] convert_checkpoint.py: line {i}\\n' for i in range(s, min(n, s + 10000)))\n"
    "    sys.stdout.write(''.join(lines))\n"
)


def _old_runner(rev: str, scratch: Path) -> object | None:
    """The runner of the package as of ``rev`` (its whole tree extracted, imported in place of this one).

    Only called in a child process that has not imported ``trtllm_builder`` yet.
    """
    old = scratch / "old"
    old.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "trtllm_builder"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    sys.path.insert(0, str(old))
    return importlib.import_module("trtllm_builder.runner")


def child(mode: str, lines: int, rev: str) -> None:
    """Run the chatty step once in ``mode``; print its wall time as JSON on stdout."""

    def err(line: str) -> None:  # the CLI's log sink (cli._err)
        print(line, file=sys.stderr, flush=True)

    argv = [sys.executable, "-c", CHATTY, str(lines)]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if mode == "before":
            old = _old_runner(rev, scratch)
            if old is None:
                print(json.dumps({"skip": f"no runner at {rev}"}))
                return
            start = time.perf_counter()
            old.run_step(argv, name="convert", cwd=scratch, emit=err)  # type: ignore[attr-defined]
        elif mode == "unbounded":
            from trtllm_builder.run.runner import run_step

            start = time.perf_counter()
            run_step(argv, name="convert", cwd=scratch, emit=err, secrets=["hf_benchSECRET0123456789"])
        else:
            from trtllm_builder.run.buildlog import BuildLog
            from trtllm_builder.run.runner import run_step

            log = BuildLog(err, secrets=["hf_benchSECRET0123456789"])
            log.open(scratch / "build.log")
            start = time.perf_counter()
            log.start_output("convert")
            run_step(argv, name="convert", cwd=scratch, emit=log.output, note=log, secrets=["hf_benchSECRET0123456789"])
            log.end_output()
            log.close()
            kept = sum(1 for _ in (scratch / "build.log").open())
            if kept < lines:
                raise SystemExit(f"build.log kept {kept} of {lines} lines")
        took = time.perf_counter() - start
    print(json.dumps({"seconds": took}))


def measure(mode: str, lines: int, rev: str) -> float | None:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--lines", str(lines), "--baseline-rev", rev],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None and proc.stdout is not None
    shown = 0
    for _ in proc.stderr:  # drain like a terminal would
        shown += 1
    result = json.loads(proc.stdout.read() or b"{}")
    if proc.wait() != 0:
        raise SystemExit(f"{mode}: the child failed")
    if "skip" in result:
        print(f"{mode:>9}: skipped ({result['skip']})")
        return None
    seconds = float(result["seconds"])
    print(f"{mode:>9}: {lines / seconds:>10,.0f} lines/s ({seconds:.2f} s; {shown:,} lines reached stderr)")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=300_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline-rev", default="69bec57", help="git revision of the runner before bounded logs")
    p.add_argument("--child", choices=["before", "unbounded", "after"], help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.child:
        child(ns.child, ns.lines, ns.baseline_rev)
        return
    print(f"a step printing {ns.lines:,} lines; median of {ns.rounds} rounds per mode")
    medians: dict[str, float] = {}
    for mode in ("before", "unbounded", "after"):
        times = [t for _ in range(ns.rounds) if (t := measure(mode, ns.lines, ns.baseline_rev)) is not None]
        if times:
            medians[mode] = statistics.median(times)
    base = "before" if "before" in medians else "unbounded"
    for mode, secs in medians.items():
        if mode != base:
            print(f"throughput {mode} / {base}: {medians[base] / secs:.2f}x")


if __name__ == "__main__":
    main()
