"""The model's ``config.json`` before the download, for a recipe: read in place for a local model,
one small file from the Hub for a repo (no weights); then the recipe is expanded into steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trtllm_builder.config.schema import BuildConfig, ModelSpec
from trtllm_builder.errors import ConfigError, FetchError
from trtllm_builder.fetch import hub
from trtllm_builder.fetch.sources import ModelRef, classify, hf_token
from trtllm_builder.plan.expand import expand_config

__all__ = ["read_model_config", "resolve_recipe"]


def read_model_config(
    model: ModelSpec,
    *,
    token: str | None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """The model's ``config.json`` and where it was read, without downloading the weights.

    A local directory is read in place; a Hugging Face repo costs one small download of
    ``config.json`` only. A tarball cannot be read before its download: raises ``ConfigError``
    (set ``recipe.architecture``).
    """
    if local_dir is not None:
        return _read_json(Path(local_dir) / "config.json"), f"{local_dir}/config.json"
    ref = ModelRef(model.id, model.revision, model.tar_url)
    kind = classify(ref)
    if kind == "local":
        path = Path(model.id.removeprefix("file://")).expanduser() / "config.json"
        return _read_json(path), str(path)
    if kind == "tar":
        raise ConfigError(
            "a recipe reads the model's config.json before the download, and a `model_tar_url` cannot be "
            "read that early: set `recipe.architecture` (e.g. `LlamaForCausalLM`)"
        )
    tok = hf_token(token)
    try:
        path = hub.fetch_file(
            model.id,
            "config.json",
            model.revision,
            token=tok,
            cache_dir=cache_dir / "hf-configs" if cache_dir is not None else None,
        )
    except FetchError as err:
        raise FetchError(f"the recipe needs `{model.id}`'s config.json: {err}") from err.__cause__
    rev = f"@{model.revision}" if model.revision else ""
    return _read_json(path), f"{hub.endpoint()}/{model.id}{rev} (config.json only)"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: a recipe needs the model's config.json") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def resolve_recipe(
    config: BuildConfig,
    *,
    token: str | None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
) -> BuildConfig:
    """Read the model's config.json (one small read; no weights) and expand the recipe."""
    if config.recipe is None:
        return config
    if config.recipe.architecture is not None and config.model.tar_url is not None:
        return expand_config(config, hf_config={}, source="recipe.architecture")
    hf_config, source = read_model_config(
        config.model, token=token or config.hf_token, cache_dir=cache_dir, local_dir=local_dir
    )
    return expand_config(config, hf_config=hf_config, source=source)
