"""The TensorRT-LLM source tree: where examples and their scripts live, resolved safely."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from trtllm_builder.errors import ConfigError, SetupError
from trtllm_builder.plan.flagtable import old_script_hint

__all__ = ["DEFAULT_TRTLLM_DIRS", "EXAMPLE_ROOTS", "TrtllmTree", "find_tree"]

# scripts/fetch-trees.sh puts the tree at the top of the project: the working directory of a user on a
# GPU host, and /src in the image (Dockerfile and cog both run from /src, as cog-trt-llm did).
DEFAULT_TRTLLM_DIRS = (Path("TensorRT-LLM"), Path("/src/TensorRT-LLM"))
# Example folders moved between releases; look in all of them, newest layout first.
EXAMPLE_ROOTS = ("models/core", "models/contrib", "")


@dataclass(frozen=True)
class TrtllmTree:
    root: Path

    @property
    def examples(self) -> Path:
        return self.root / "examples"

    def example_names(self) -> list[str]:
        names: set[str] = set()
        for sub in EXAMPLE_ROOTS:
            base = self.examples / sub if sub else self.examples
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if p.is_dir() and p.name not in {"models"})
        return sorted(names)

    def example_dirs(self, name: str) -> list[Path]:
        """Every existing ``examples/models/core/<name>``, ``examples/models/contrib/<name>``, ``examples/<name>``."""
        if not name or "/" in name or "\\" in name or name in {".", ".."} or "\x00" in name:
            raise ConfigError(f"example `{name}` must be a plain example name such as `llama`")
        found = []
        for sub in EXAMPLE_ROOTS:
            cand = (self.examples / sub / name) if sub else (self.examples / name)
            if cand.is_dir() and self._inside(cand):
                found.append(cand)
        if not found:
            close = difflib.get_close_matches(name, self.example_names(), n=3)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise ConfigError(
                f"example `{name}` is not in {self.examples} (looked in examples/models/core/{name}, "
                f"examples/models/contrib/{name}, examples/{name}){hint}"
            )
        return found

    def script(self, example: str, script: str) -> Path:
        """Resolve ``script`` in the example's dir(s), else the examples root (e.g. ``run.py``).

        The result, symlinks resolved, must be a regular file inside the examples tree.
        """
        if not script or script.startswith(("/", "~")) or ".." in script.replace("\\", "/").split("/"):
            raise ConfigError(f"script `{script}` must be a file name inside the example directory")
        ex_dirs = self.example_dirs(example)
        for base in (*ex_dirs, self.examples):
            cand = base / script
            if cand.exists() or cand.is_symlink():
                real = cand.resolve()
                if not self._inside(real):
                    raise ConfigError(
                        f"script `{script}` of example `{example}` resolves to {real}, outside the "
                        f"TensorRT-LLM examples tree {self.examples}; refusing to run it"
                    )
                if not real.is_file():
                    raise ConfigError(f"script `{script}` of example `{example}` is not a file ({real})")
                return cand
        scripts = sorted({p.name for d in ex_dirs for p in d.iterdir() if p.suffix == ".py"})
        close = difflib.get_close_matches(script, scripts, n=3)
        hint = (
            f"; did you mean {', '.join(f'`{c}`' for c in close)}?"
            if close
            else (f"; it has: {', '.join(scripts)}" if scripts else "")
        )
        where = ", ".join(str(d) for d in ex_dirs)
        old = old_script_hint(script, example)
        if old is not None:
            hint = f": {old}"
        raise ConfigError(f"script `{script}` is not in example `{example}` ({where}){hint}")

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.examples.resolve())


def find_tree(trtllm_dir: str | os.PathLike[str] | None = None) -> TrtllmTree:
    """``--trtllm-dir``, else ``TRTLLM_DIR``, else ``./TensorRT-LLM``, else ``/src/TensorRT-LLM``."""
    chosen = trtllm_dir or os.environ.get("TRTLLM_DIR")
    if not chosen:
        chosen = next((d for d in DEFAULT_TRTLLM_DIRS if (d / "examples").is_dir()), DEFAULT_TRTLLM_DIRS[0])
    root = Path(chosen).expanduser()
    if not (root / "examples").is_dir():
        how = "--trtllm-dir" if trtllm_dir else ("TRTLLM_DIR" if os.environ.get("TRTLLM_DIR") else "the default")
        raise SetupError(
            f"no TensorRT-LLM examples tree at {root.absolute()}/examples (from {how}); run "
            "`scripts/fetch-trees.sh` in the project (it checks out the installed release's tree at the top "
            "of the project), or point --trtllm-dir or TRTLLM_DIR at a TensorRT-LLM checkout of the installed version"
        )
    return TrtllmTree(root.resolve())
