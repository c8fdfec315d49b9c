"""Shared code of the stand-in TensorRT-LLM scripts (tests only; stdlib only).

Every script under ``tests/standin/TensorRT-LLM`` and ``tests/standin/bin`` is a thin
wrapper that puts ``tests/standin/_lib`` on ``sys.path`` and calls into this package.
The command-line parsers here mirror the real TensorRT-LLM ones (flag names, types,
defaults, choices); the work they do is cheap and fake. See ``tests/standin/README.md``.
"""
