"""Stand-in for TensorRT-LLM v1.2.1 examples/run.py (tests only).

Same flags (its own + ``utils.add_common_args``). Reads the engine ``config.json``, checks the
rank's engine file, the MPI world size (``OMPI_COMM_WORLD_*``) and the GPU, then prints fake
generations in the real format (rank 0 only):
``Input [Text 0]: "..."`` / ``Output [Text 0 Beam 0]: "..."``.
"""

import argparse
import sys
from pathlib import Path


def _standin_lib() -> str:
    here = Path(__file__).resolve().parent
    for d in (here, *here.parents):
        if (d / "_lib" / "standin_lib").is_dir():
            return str(d / "_lib")
    raise SystemExit(f"stand-in library (tests/standin/_lib) not found above {here}")


sys.path.insert(0, _standin_lib())

from standin_lib.common import start  # noqa: E402
from standin_lib.runner import run  # noqa: E402
from utils import add_common_args  # noqa: E402


def parse_arguments(args=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_input_length", type=int, default=923)
    parser.add_argument("--max_output_len", type=int, required=True)
    parser.add_argument("--input_text", type=str, nargs="+", default=["Born in north-east France, Soyer trained as a"])
    parser.add_argument("--input_file", type=str, default=None, help="CSV, Numpy or text file with inputs.")
    parser.add_argument("--output_csv", type=str, default=None)
    parser.add_argument("--output_npy", type=str, default=None)
    parser.add_argument("--output_logits_npy", type=str, default=None)
    parser.add_argument("--output_log_probs_npy", type=str, default=None)
    parser.add_argument("--output_cum_log_probs_npy", type=str, default=None)
    parser.add_argument("--run_profiling", default=False, action="store_true")
    parser = add_common_args(parser)
    return parser.parse_args(args=args)


if __name__ == "__main__":
    controls = start(__file__)
    run(parse_arguments(), controls)
