"""A stand-in for tritonserver loading a model repository (tests only).

Triton cannot run here (no GPU, no container). What this does is what tritonserver does to each
non-ensemble model at startup, with the real pieces where they exist:

* every ``config.pbtxt`` is parsed with Triton's own ``ModelConfig`` proto (``tritonclient``);
* a ``backend: "python"`` model: the config is turned into JSON as core does
  (``ModelConfigToJson``: proto field names, default values printed; triton-inference-server/core
  src/model_config_utils.cc), its ``<version>/model.py`` is imported with a stand-in
  ``triton_python_backend_utils`` (tests/standin/backend/python_backend) and the version folder on
  ``sys.path``, and ``TritonPythonModel().initialize(args)`` runs: the repository's own model.py,
  with the real transformers loading the real tokenizer folder;
* a ``backend: "tensorrtllm"`` model: the backend stand-in's ``load()`` of that release
  (``<backend>/inflight_batcher_llm/standin_backend.py``), which mirrors the C++ parameter reads;
* an ensemble fails when a step model failed. Its tensor wiring (data types, shapes, decoupled
  steps) is core's ensemble_utils.cc, which is not stood in for here: that is what
  ``trtllm_builder.outputs.tritonverify`` checks, and its own tests pin it to core's algorithm.

``--mount /models`` plays ``docker run -v <repo>:/models``: parameter paths under it are read in the
repository. Run as ``python tests/tritonload.py REPO=TEMPLATES [REPO=TEMPLATES ...] --mount /models``
(TEMPLATES: the templates the repository was filled from, which pick the backend stand-in); prints
``{REPO: {"loaded": [...], "failed": {model: error}}}`` as JSON and exits 0 when everything loaded.
Several repositories in one run share one interpreter (and one transformers import).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PB_UTILS_DIR = HERE / "standin" / "backend" / "python_backend"


def _to_json(config: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    kwargs: dict[str, Any] = {"preserving_proto_field_name": True}
    params = inspect.signature(json_format.MessageToDict).parameters
    if "always_print_fields_with_no_presence" in params:  # protobuf >= 5.26
        kwargs["always_print_fields_with_no_presence"] = True
    else:
        kwargs["including_default_value_fields"] = True
    return dict(json_format.MessageToDict(config, **kwargs))


def _backend_root(templates: Path) -> Path:
    """The checkout (or triton_backend/ folder) that holds ``all_models/inflight_batcher_llm``."""
    templates = templates.resolve()
    return templates.parent.parent if templates.name == "inflight_batcher_llm" else templates


def _load_python(name: str, model_dir: Path, config: dict[str, Any]) -> None:
    version = max((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    sys.path.insert(0, str(version))
    try:
        spec = importlib.util.spec_from_file_location(f"triton_model_{id(config)}_{name}", version / "model.py")
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot import {version / 'model.py'}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        args = {
            "model_config": json.dumps(config),
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_repository": str(model_dir),
            "model_version": version.name,
            "model_name": name,
        }
        module.TritonPythonModel().initialize(args)
    finally:
        sys.path.remove(str(version))
        for mod in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
            del sys.modules[mod]


def _load_backend(templates: Path, config: dict[str, Any], resolve: Any) -> None:
    path = _backend_root(templates) / "inflight_batcher_llm" / "standin_backend.py"
    spec = importlib.util.spec_from_file_location("standin_backend", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"no backend stand-in at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load(config, resolve)


def load_repository(repo: Path, templates: Path, mount: str) -> dict[str, Any]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    if str(PB_UTILS_DIR) not in sys.path:
        sys.path.insert(0, str(PB_UTILS_DIR))
    mount = mount.rstrip("/")

    def resolve(path: str) -> str:
        return str(repo / path[len(mount) + 1 :]) if path.startswith(mount + "/") else path

    loaded: list[str] = []
    failed: dict[str, str] = {}
    ensembles: dict[str, Any] = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        name = model_dir.name
        try:
            config = model_config_pb2.ModelConfig()
            text_format.Parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"), config)
            if config.platform == "ensemble":
                ensembles[name] = config
                continue
            as_json = _to_json(config)
            for value in as_json.get("parameters", {}).values():
                value["string_value"] = resolve(value.get("string_value", ""))
            if config.backend == "python":
                _load_python(name, model_dir, as_json)
            elif config.backend == "tensorrtllm":
                _load_backend(templates, as_json, resolve)
            else:
                raise RuntimeError(f"unexpected backend {config.backend!r}")
            loaded.append(name)
        except Exception as exc:  # a model that fails to load is reported, as Triton's status table does
            failed[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
    for name, config in ensembles.items():
        broken = [s.model_name for s in config.ensemble_scheduling.step if s.model_name not in loaded]
        if broken:
            failed[name] = f"ensemble step model(s) not loaded: {', '.join(broken)}"
        else:
            loaded.append(name)
    return {"loaded": sorted(loaded), "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="+", help="REPO=TEMPLATES")
    parser.add_argument("--mount", default="/models")
    ns = parser.parse_args()
    results: dict[str, Any] = {}
    with contextlib.redirect_stdout(sys.stderr):  # what the models print goes to the log, as in tritonserver
        for pair in ns.pairs:
            repo, _, templates = pair.partition("=")
            results[repo] = load_repository(Path(repo).resolve(), Path(templates), ns.mount)
    print(json.dumps(results))
    return 1 if any(r["failed"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
