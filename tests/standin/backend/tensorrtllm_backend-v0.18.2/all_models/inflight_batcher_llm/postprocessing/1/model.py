"""Stand-in for tensorrtllm_backend v0.18.2 all_models/inflight_batcher_llm/postprocessing/1/model.py (tests only).

initialize() indexes ``tokenizer_dir`` directly, reads ``skip_special_tokens`` with ``.get``,
loads the tokenizer with ``transformers.AutoTokenizer`` and looks up the ``OUTPUT`` config, as
the real one does. execute() is not stood in for.
"""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        tokenizer_dir = model_config["parameters"]["tokenizer_dir"]["string_value"]
        skip_special_tokens = model_config["parameters"].get("skip_special_tokens")
        self.skip_special_tokens = True
        if skip_special_tokens is not None:
            value = skip_special_tokens["string_value"].lower()
            if value in ("true", "false", "1", "0", "t", "f", "y", "n", "yes", "no"):
                self.skip_special_tokens = value in ("true", "1", "t", "y", "yes")

        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_dir, legacy=False, padding_side="left", trust_remote_code=True
        )
        if not self.tokenizer.pad_token:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        output_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT")
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

    def execute(self, requests):
        raise pb_utils.TritonModelException("stand-in: execute() is not stood in for")
