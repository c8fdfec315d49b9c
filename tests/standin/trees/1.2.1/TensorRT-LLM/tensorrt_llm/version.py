# Stand-in of the TensorRT-LLM source tree (tests only).
__version__ = "1.2.1"
