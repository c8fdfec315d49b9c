"""Stand-in for TensorRT-LLM v0.7.1 examples/gpt/hf_gpt_convert.py (tests only).

Writes the FasterTransformer layout: <out-dir>/<tp>-gpu/config.ini + *.bin.
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

from standin_lib.legacy import run_convert  # noqa: E402

if __name__ == "__main__":
    run_convert(__file__)
