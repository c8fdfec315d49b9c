"""Stand-in for tensorrtllm_backend v0.19.0 tensorrt_llm_bls/1/lib/decode.py (tests only): importable, does nothing."""


class Decoder:
    def __init__(self, streaming=False, accumulate=False):
        self.streaming = streaming
        self.accumulate = accumulate
