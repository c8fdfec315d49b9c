"""Stage 2, plan: the config made concrete against a TensorRT-LLM tree and this machine: the scripts,
their own argument parsers, the exact argv of every step, the directories and the expected outputs,
cog-trt-llm's old flags translated, recipes expanded, the disk the build will need."""
