"""Placeholder for the backend's `preprocessing` Triton Python model (stand-in, tests only).

The real file implements TritonPythonModel; tests only check that the builder copies
it into the model repository unchanged. Like the real one, it treats a parameter still
holding an unfilled "${...}" placeholder as unset, so a literal "${" in a model.py
must not be mistaken for an unfilled template variable.
"""


def _param(config: dict, key: str) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    if value == "" or value.startswith("${"):
        return None
    return value
