# Stand-in of the TensorRT-LLM source tree (tests only).
__version__ = "0.7.1"
