"""Stand-in for TensorRT-LLM v1.2.1 examples/models/core/qwen/convert_checkpoint.py (tests only).

Same flags as the real script; writes a tiny checkpoint (config.json + rank{N}.safetensors).
See tests/standin/README.md (the fidelity ledger says what it mirrors).
"""

import sys
from pathlib import Path


def _standin_lib() -> str:
    here = Path(__file__).resolve().parent
    for d in (here, *here.parents):
        if (d / "_lib" / "standin_lib").is_dir():
            return str(d / "_lib")
    raise SystemExit(f"stand-in library (tests/standin/_lib) not found above {here}")


sys.path.insert(0, _standin_lib())

from standin_lib.converters import main  # noqa: E402

if __name__ == "__main__":
    main("qwen", __file__)
