"""Stand-in for tensorrtllm_backend v0.18.2 all_models/inflight_batcher_llm/tensorrt_llm_bls/1/model.py (tests only).

initialize() reads every parameter through ``params.get(...)`` and treats ``""`` or a value
starting with ``${`` as unset (``get_valid_param_value``), as the real one does; it imports its
decoder from ``lib/`` like the real one. execute() is not stood in for.
"""

import json

import triton_python_backend_utils as pb_utils
from lib.decode import Decoder


def get_valid_param_value(param, default_value=""):
    value = param.get("string_value", "")
    return default_value if value.startswith("${") or value == "" else value


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        params = model_config["parameters"]
        accumulate = get_valid_param_value(params.get("accumulate_tokens", {}))
        self.accumulate_tokens = accumulate.lower() in ("true", "yes", "1", "t")
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        self.llm_model_name = get_valid_param_value(params.get("tensorrt_llm_model_name", {}), "tensorrt_llm")
        self.draft_llm_model_name = get_valid_param_value(params.get("tensorrt_llm_draft_model_name", {}), None)
        self.multimodal_encoders_name = get_valid_param_value(params.get("multimodal_encoders_name", {}), None)
        self.decoder = Decoder(streaming=self.decoupled, accumulate=self.accumulate_tokens)

    def execute(self, requests):
        raise pb_utils.TritonModelException("stand-in: execute() is not stood in for")
