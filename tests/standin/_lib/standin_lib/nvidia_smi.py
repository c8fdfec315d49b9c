"""``nvidia-smi`` stand-in: the ``--query-gpu`` CSV interface, ``-L`` and a summary table."""

from __future__ import annotations

import sys

from .common import start
from .gpus import CUDA_VERSION, DRIVER_VERSION, NO_DRIVER_MESSAGE, Gpu, NoDriverError, gpus

# field -> (header, unit or "", value function)
FIELDS = {
    "index": ("index", "", lambda g, n: str(g.index)),
    "name": ("name", "", lambda g, n: g.name),
    "gpu_name": ("name", "", lambda g, n: g.name),
    "uuid": ("uuid", "", lambda g, n: g.uuid),
    "gpu_uuid": ("uuid", "", lambda g, n: g.uuid),
    "compute_cap": ("compute_cap", "", lambda g, n: g.compute_cap),
    "memory.total": ("memory.total", "MiB", lambda g, n: str(g.memory_mib)),
    "memory.used": ("memory.used", "MiB", lambda g, n: "1"),
    "memory.free": ("memory.free", "MiB", lambda g, n: str(g.memory_mib - 1)),
    "driver_version": ("driver_version", "", lambda g, n: DRIVER_VERSION),
    "count": ("count", "", lambda g, n: str(n)),
    "pci.bus_id": ("pci.bus_id", "", lambda g, n: f"00000000:{0x18 + 0x10 * g.index:02X}:00.0"),
    "utilization.gpu": ("utilization.gpu", "%", lambda g, n: "0"),
    "temperature.gpu": ("temperature.gpu", "", lambda g, n: "31"),
    "power.limit": ("power.limit", "W", lambda g, n: "400.00"),
}


def _table(found: list[Gpu]) -> str:
    lines = [
        "+-----------------------------------------------------------------------------------------+",
        f"| NVIDIA-SMI {DRIVER_VERSION:<14} Driver Version: {DRIVER_VERSION:<14} CUDA Version: {CUDA_VERSION:<8}|",
        "|-----------------------------------------+------------------------+----------------------+",
    ]
    for g in found:
        lines.append(f"| {g.index:>3}  {g.name[:30]:<30}    On | {g.memory_mib:>8}MiB total       |      0%  Default |")
    lines.append("+-----------------------------------------------------------------------------------------+")
    return "\n".join(lines)


def main(script: str) -> None:
    controls = start(script, print_banner=False)
    argv = sys.argv[1:]
    query: str | None = None
    fmt: str | None = None
    ids: set[int] | None = None
    list_gpus = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in ("--query-gpu", "--format", "-i", "--id") and not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
        if name == "--query-gpu":
            query = value
        elif name == "--format":
            fmt = value
        elif name in ("-i", "--id"):
            ids = {int(v) for v in value.split(",") if v.strip()}
        elif name in ("-L", "--list-gpus"):
            list_gpus = True
        elif name in ("-h", "--help"):
            print("NVIDIA System Management Interface -- v" + DRIVER_VERSION)
            return
        else:
            print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n")
            sys.exit(2)
        i += 1
    controls.begin_work()
    try:
        found = gpus()
    except NoDriverError:
        print(NO_DRIVER_MESSAGE + "\n", flush=True)
        sys.exit(9)
    if not found:
        print("No devices were found", flush=True)
        sys.exit(6)
    if ids is not None:
        found = [g for g in found if g.index in ids]
    if list_gpus:
        for g in found:
            print(f"GPU {g.index}: {g.name} (UUID: {g.uuid})")
        return
    if query is None:
        print(_table(found))
        return
    options = set((fmt or "").split(","))
    if "csv" not in options:
        print('"--format" must be specified with "--query-gpu". Please run \'nvidia-smi -h\' for help.\n')
        sys.exit(2)
    names = [f.strip() for f in query.split(",")]
    for f in names:
        if f not in FIELDS:
            print(f'Field "{f}" is not a valid field to query.\n')
            sys.exit(2)
    units = "nounits" not in options
    if "noheader" not in options:
        heads = []
        for f in names:
            head, unit, _ = FIELDS[f]
            heads.append(f"{head} [{unit}]" if unit else head)
        print(", ".join(heads))
    for g in found:
        cells = []
        for f in names:
            _, unit, fn = FIELDS[f]
            value = fn(g, len(found))
            if unit and units:
                value = f"{value} {unit}"
            cells.append(value)
        print(", ".join(cells))
