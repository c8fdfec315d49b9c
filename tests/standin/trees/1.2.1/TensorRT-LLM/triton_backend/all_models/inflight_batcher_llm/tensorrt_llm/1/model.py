"""Stand-in for TensorRT-LLM 1.2.1 triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/1/model.py (tests only).

The Python-backend flavour of the TensorRT-LLM model (``triton_backend: python``). Like the real
one it reads every parameter through ``get_parameter``, which checks the key is present first and
reads ``""`` or ``${...}`` as unset (``read_parameter_as_type``). Instead of starting the executor
it checks that ``gpt_model_path`` holds an engine config.
"""

import json
import os

import triton_python_backend_utils as pb_utils


def read_parameter_as_type(value, name, pytype=str):
    if value == "":
        return None
    if value.startswith("${") and value.endswith("}"):
        return None
    if pytype is bool:
        return value.lower() in ["1", "true"]
    try:
        return pytype(value)
    except ValueError:
        pb_utils.Logger.log_warning(f"Could not read parameter '{name}' with value '{value}', will use default.")
        return None


def get_parameter(model_config, name, pytype=str):
    if name not in model_config["parameters"]:
        return None
    return read_parameter_as_type(model_config["parameters"][name]["string_value"], name, pytype)


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        gpt_model_path = get_parameter(model_config, "gpt_model_path")
        if get_parameter(model_config, "enable_trt_overlap", bool):
            raise pb_utils.TritonModelException("enable_trt_overlap=true is not supported.")
        self.exclude_input_from_output = get_parameter(model_config, "exclude_input_in_output", bool)
        self.max_beam_width = get_parameter(model_config, "max_beam_width", int)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        if gpt_model_path is None or not os.path.isfile(os.path.join(gpt_model_path, "config.json")):
            raise pb_utils.TritonModelException(f"stand-in executor: no engine config.json in {gpt_model_path}")

    def execute(self, requests):
        raise pb_utils.TritonModelException("stand-in: execute() is not stood in for")
