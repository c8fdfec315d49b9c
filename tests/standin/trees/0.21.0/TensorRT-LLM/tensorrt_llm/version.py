# Stand-in of the TensorRT-LLM source tree (tests only).
__version__ = "0.21.0"
