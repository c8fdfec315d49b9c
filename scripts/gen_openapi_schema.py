#!/usr/bin/env python3
"""Write ``.cog/openapi_schema.json`` from ``predict.py``, the file ``cog build`` would write.

coglet (the Cog 0.23 HTTP server) does not build its schema at run time: it reads
``.cog/openapi_schema.json`` from its working directory and validates inputs against
``components.schemas.Input``. Without the file inputs are not validated at all. ``cog build``
writes it with a static Go generator; this script builds the same document from the cog SDK's
own inspector, so the server behaves the same without the Go CLI (and without Docker).

    python scripts/gen_openapi_schema.py           # (re)write the committed file
    python scripts/gen_openapi_schema.py --check   # exit 1 when the committed file is stale

The structure mirrors cog's ``pkg/schema/openapi_spec.go`` (OpenAPI 3.0.2: Input, Output,
PredictionRequest, PredictionResponse, Status, HTTPValidationError, ValidationError).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REF = "predict.py:Predictor"
SCHEMA_PATH = Path(".cog") / "openapi_schema.json"

__all__ = ["build_schema", "main", "render"]


def _title(name: str) -> str:
    """snake_case -> Title Case, as cog's ``TitleCase``."""
    return " ".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _input_schema(info: Any) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    from cog import _adt as adt

    optional = (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
    properties: dict[str, Any] = {}
    required: list[str] = []
    enums: list[tuple[str, dict[str, Any]]] = []
    for name, field in sorted(info.inputs.items(), key=lambda kv: kv[1].order):
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices:
            enum_type = field.type.primitive.json_type().get("type", "string")
            enums.append(
                (
                    name,
                    {"title": name, "description": "An enumeration.", "enum": list(field.choices), "type": enum_type},
                )
            )
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(field.type.json_type())
        nullable = field.type.repetition in optional
        if field.default is not None:
            prop["default"] = field.type.json_encode(field.default)
        elif not nullable:
            required.append(name)
        if nullable:
            prop["nullable"] = True
        if field.description is not None:
            prop["description"] = field.description
        for key, attr in (
            ("minimum", "ge"),
            ("maximum", "le"),
            ("minLength", "min_length"),
            ("maxLength", "max_length"),
            ("pattern", "regex"),
        ):
            value = getattr(field, attr)
            if value is not None:
                prop[key] = value
        if field.deprecated:
            prop["deprecated"] = True
        properties[name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _error_responses() -> dict[str, Any]:
    return {
        "422": {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        }
    }


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}}


def build_schema(ref: str = DEFAULT_REF, root: Path = ROOT) -> dict[str, Any]:
    """The OpenAPI document for the predictor ``ref`` (``file.py:Class``) of the project at ``root``."""
    import cog
    from cog._inspector import create_predictor

    module_file, _, class_name = ref.partition(":")
    module = Path(module_file).stem
    sys.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            info = create_predictor(module, class_name or "Predictor")
    finally:
        sys.path.remove(str(root))
    input_schema, enums = _input_schema(info)
    schemas: dict[str, Any] = {"Input": input_schema, "Output": info.output.json_type()}
    schemas.update(enums)
    schemas["PredictionRequest"] = {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {"id": {"title": "Id", "type": "string"}, "input": {"$ref": "#/components/schemas/Input"}},
    }
    schemas["PredictionResponse"] = {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "status": {"title": "Status", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "logs": {"title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }
    schemas["Status"] = {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    }
    schemas["HTTPValidationError"] = {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {"title": "Detail", "type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}
        },
    }
    schemas["ValidationError"] = {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    }
    paths = {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": _ok({})}},
        "/health-check": {
            "get": {"summary": "Healthcheck", "operationId": "healthcheck_health_check_get", "responses": _ok({})}
        },
        "/predictions": {
            "post": {
                "summary": "Predict",
                "description": "Run a single prediction on the model",
                "operationId": "predict_predictions_post",
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}}
                },
                "responses": {**_ok({"$ref": "#/components/schemas/PredictionResponse"}), **_error_responses()},
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [
                    {
                        "required": True,
                        "schema": {"title": "Prediction Id", "type": "string"},
                        "name": "prediction_id",
                        "in": "path",
                    }
                ],
                "responses": {**_ok({}), **_error_responses()},
            }
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": cog.__version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ref", default=DEFAULT_REF, help=f"predictor reference (default: {DEFAULT_REF})")
    p.add_argument("--root", type=Path, default=ROOT, help="project root (default: this repository)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the file is missing or stale")
    ns = p.parse_args(argv)
    root = ns.root.resolve()
    target = root / SCHEMA_PATH
    text = render(build_schema(ns.ref, root))
    current = target.read_text(encoding="utf-8") if target.is_file() else None
    if ns.check:
        if current != text:
            print(
                f"{target} is {'missing' if current is None else 'stale'}: run `python scripts/gen_openapi_schema.py`"
                " and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is up to date")
        return 0
    if current == text:
        print(f"{target} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
