"""Stand-in for Triton's Python-backend module ``triton_python_backend_utils`` (tests only).

Only what the stand-in ``model.py`` files call, with the real semantics of
triton-inference-server/python_backend ``src/resources/triton_python_backend_utils.py``:
``get_input_config_by_name`` / ``get_output_config_by_name`` return the matching dict of the
JSON config or ``None``; ``using_decoupled_model_transaction_policy`` reads
``model_transaction_policy.decoupled``; ``triton_string_to_numpy`` maps ``TYPE_*`` strings.
"""

from __future__ import annotations

import sys

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

_NUMPY = {
    "TYPE_BOOL": "bool",
    "TYPE_UINT8": "uint8",
    "TYPE_UINT16": "uint16",
    "TYPE_UINT32": "uint32",
    "TYPE_UINT64": "uint64",
    "TYPE_INT8": "int8",
    "TYPE_INT16": "int16",
    "TYPE_INT32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_FP16": "float16",
    "TYPE_FP32": "float32",
    "TYPE_FP64": "float64",
    "TYPE_STRING": "object",
}


class TritonModelException(Exception):
    pass


class Logger:
    @staticmethod
    def log_info(msg: str) -> None:
        print(f"[stand-in pb_utils] info: {msg}", file=sys.stderr)

    log_warn = log_warning = log_verbose = log_info

    @staticmethod
    def log_error(msg: str) -> None:
        print(f"[stand-in pb_utils] error: {msg}", file=sys.stderr)


def _find(model_config: dict, section: str, name: str) -> dict | None:
    for props in model_config.get(section, []):
        if props["name"] == name:
            return props
    return None


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    return _find(model_config, "input", name)


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    return _find(model_config, "output", name)


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    if "model_transaction_policy" in model_config:
        return bool(model_config["model_transaction_policy"]["decoupled"])
    return False


def triton_string_to_numpy(triton_type_string: str) -> str:
    return _NUMPY[triton_type_string]  # KeyError on an unknown type, as the real mapping
