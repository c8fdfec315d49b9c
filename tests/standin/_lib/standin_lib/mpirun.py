"""``mpirun`` stand-in (Open MPI flavoured): N concurrent copies with OMPI_COMM_WORLD_* set."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from .common import start

BAR = "-" * 74
VALUE_OPTIONS = {
    "-x", "--bind-to", "--map-by", "--rank-by", "-H", "--host", "--hostfile", "--machinefile",
    "--output-filename", "--prefix", "-wdir", "--wdir", "--npernode", "-N", "--timeout",
}  # fmt: skip
FLAG_OPTIONS = {
    "--allow-run-as-root", "--oversubscribe", "-q", "--quiet", "--tag-output", "--timestamp-output",
    "--report-bindings", "--display-map", "-v", "--verbose", "--merge-stderr-to-stdout",
    "--use-hwthread-cpus", "--noprefix",
}  # fmt: skip
COUNT_OPTIONS = {"-n", "-np", "--np", "-c", "--n"}


def _die(msg: str, code: int = 1) -> None:
    sys.stderr.write(f"{BAR}\n{msg}\n{BAR}\n")
    sys.stderr.flush()
    sys.exit(code)


def parse(argv: list[str]) -> tuple[int | None, set[str], list[str], list[str], str | None]:
    n: int | None = None
    flags: set[str] = set()
    exports: list[str] = []
    wdir: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            break
        name, eq, inline = arg.partition("=")
        if name in COUNT_OPTIONS:
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if eq else 2
            try:
                n = int(value)
            except ValueError:
                _die(
                    f"Open MPI has detected that a parameter given to a command line\noption does not "
                    f"match the expected format:\n\n  Option: {name}\n  Param:  {value}"
                )
            continue
        if name == "--mca" or name == "-mca":
            i += 3
            continue
        if name in VALUE_OPTIONS:
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if eq else 2
            if name == "-x":
                exports.append(value)
            elif name in ("-wdir", "--wdir"):
                wdir = value
            continue
        if name in FLAG_OPTIONS:
            flags.add(name)
            i += 1
            continue
        if name in ("-h", "--help"):
            print("mpirun (Open MPI) 4.1.7 (standin)\n\nUsage: mpirun [OPTION]...  [PROGRAM]...")
            sys.exit(0)
        if name in ("-V", "--version"):
            print("mpirun (Open MPI) 4.1.7\n\nReport bugs to http://www.open-mpi.org/community/help/")
            sys.exit(0)
        sys.stderr.write(f"mpirun: Error: unknown option \"{arg}\"\nType 'mpirun --help' for usage.\n")
        sys.exit(1)
    return n, flags, exports, argv[i:], wdir


def main(script: str) -> None:
    controls = start(script, print_banner=False)
    n, flags, exports, cmd, wdir = parse(sys.argv[1:])
    if not cmd:
        _die(
            "mpirun could not find anything to do.\n\nIt is possible that you forgot to specify how many "
            'processes to run\nvia the "-np" argument.'
        )
    allow_root = "--allow-run-as-root" in flags or (
        os.environ.get("OMPI_ALLOW_RUN_AS_ROOT") == "1" and os.environ.get("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM") == "1"
    )
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not allow_root:
        _die(
            "mpirun has detected an attempt to run as root.\n\nRunning as root is *strongly* discouraged "
            "as any mistake (e.g., in\ndefining TMPDIR) or bug can result in catastrophic damage to the OS\n"
            "file system, leaving your system in an unusable state.\n\nWe strongly suggest that you run "
            "mpirun as a non-root user.\n\nYou can override this protection by adding the "
            "--allow-run-as-root option\nto the cmd line or by setting two environment variables in the "
            "following way:\nthe variable OMPI_ALLOW_RUN_AS_ROOT=1 to allow the root user to run mpirun\n"
            "and the variable OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to confirm the choice."
        )
    slots = os.cpu_count() or 1
    size = n if n is not None else slots
    if size > slots and "--oversubscribe" not in flags:
        _die(
            f"There are not enough slots available in the system to satisfy the {size}\nslots that were "
            f"requested by the application:\n\n  {cmd[0]}\n\nEither request fewer slots for your "
            "application, or make more slots\navailable for use."
        )
    controls.begin_work()
    base = dict(os.environ)
    for item in exports:
        key, eq, value = item.partition("=")
        if eq:
            base[key] = value
    procs: list[subprocess.Popen] = []
    for rank in range(size):
        env = dict(base)
        env.update({
            "OMPI_COMM_WORLD_RANK": str(rank),
            "OMPI_COMM_WORLD_SIZE": str(size),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(rank),
            "OMPI_COMM_WORLD_LOCAL_SIZE": str(size),
            "OMPI_COMM_WORLD_NODE_RANK": "0",
            "PMIX_RANK": str(rank),
        })  # fmt: skip
        try:
            procs.append(subprocess.Popen(cmd, env=env, cwd=wdir))
        except OSError:
            for p in procs:
                p.kill()
            _die(
                f"mpirun was unable to launch the specified application as it could not access\nor "
                f"execute an executable:\n\nExecutable: {cmd[0]}\nNode: localhost\n\nwhile attempting to "
                "start process rank 0."
            )
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    failed: tuple[int, int] | None = None
    while any(p.poll() is None for p in procs):
        for rank, p in enumerate(procs):
            code = p.poll()
            if code not in (None, 0) and failed is None:
                failed = (rank, code)
                for q in procs:
                    if q.poll() is None:
                        q.terminate()
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and any(q.poll() is None for q in procs):
                    time.sleep(0.02)
                for q in procs:
                    if q.poll() is None:
                        q.kill()
        time.sleep(0.02)
    if failed is None:
        for rank, p in enumerate(procs):
            if p.returncode != 0:
                failed = (rank, p.returncode)
                break
    if received and failed is None:
        sys.exit(128 + received[0])
    if failed is None:
        sys.exit(0)
    rank, code = failed
    if code < 0:
        name = signal.Signals(-code).name.replace("SIG", "").title()
        _die(
            f"mpirun noticed that process rank {rank} with PID {procs[rank].pid} on node localhost "
            f"exited on signal {-code} ({name}).",
            128 - code,
        )
    sys.stderr.write(
        f"{BAR}\nPrimary job  terminated normally, but 1 process returned\na non-zero exit code. "
        f"Per user-direction, the job has been aborted.\n{BAR}\n"
    )
    _die(
        f"mpirun detected that one or more processes exited with non-zero status, thus causing\nthe job "
        f"to be terminated. The first process to do so was:\n\n  Process name: [[4242,1],{rank}]\n  "
        f"Exit code:    {code}",
        code,
    )
