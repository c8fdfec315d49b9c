"""Stand-in for tensorrtllm_backend v0.18.2 all_models/inflight_batcher_llm/preprocessing/1/model.py (tests only).

initialize() reads its parameters the way the real one does: ``tokenizer_dir`` and
``visual_model_path`` are indexed directly (an absent block is a KeyError when Triton loads
the model), ``visual_model_path`` reads ``""`` or its own placeholder as unset,
``add_special_tokens`` and ``max_num_images`` are read with ``.get``. It loads the tokenizer with
``transformers.AutoTokenizer`` and looks its output configs up like the real one. The
multimodal path and execute() are not stood in for.
"""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        tokenizer_dir = model_config["parameters"]["tokenizer_dir"]["string_value"]
        add_special_tokens = model_config["parameters"].get("add_special_tokens")
        visual_model_path = model_config["parameters"]["visual_model_path"]["string_value"]
        max_num_images = model_config["parameters"].get("max_num_images")

        self.max_num_images = None
        if max_num_images is not None and max_num_images["string_value"].isdigit():
            self.max_num_images = int(max_num_images["string_value"])
        if visual_model_path == "${visual_model_path}" or visual_model_path == "":
            visual_model_path = None

        self.add_special_tokens = True
        if add_special_tokens is not None:
            value = add_special_tokens["string_value"].lower()
            if value in ("true", "false", "1", "0", "t", "f", "y", "n", "yes", "no"):
                self.add_special_tokens = value in ("true", "1", "t", "y", "yes")

        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_dir, legacy=False, padding_side="left", trust_remote_code=True
        )
        if not self.tokenizer.pad_token:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer_end_id = self.tokenizer.encode(self.tokenizer.eos_token, add_special_tokens=False)[0]
        self.tokenizer_pad_id = self.tokenizer.encode(self.tokenizer.pad_token, add_special_tokens=False)[0]

        if visual_model_path is not None:
            raise pb_utils.TritonModelException("stand-in: the visual-model path is not stood in for")

        for name in ("EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS"):
            config = pb_utils.get_input_config_by_name(model_config, name)
            setattr(self, name.lower() + "_dtype", pb_utils.triton_string_to_numpy(config["data_type"]))
        for name in (
            "INPUT_ID",
            "DECODER_INPUT_ID",
            "REQUEST_INPUT_LEN",
            "REQUEST_DECODER_INPUT_LEN",
            "BAD_WORDS_IDS",
            "STOP_WORDS_IDS",
            "OUT_END_ID",
            "OUT_PAD_ID",
            "OUT_PROMPT_TABLE_EXTRA_IDS",
        ):
            config = pb_utils.get_output_config_by_name(model_config, name)
            setattr(self, name.lower() + "_dtype", pb_utils.triton_string_to_numpy(config["data_type"]))

    def execute(self, requests):
        raise pb_utils.TritonModelException("stand-in: execute() is not stood in for")
