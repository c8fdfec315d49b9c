"""Every error the builder raises on purpose.

One small hierarchy, so the CLI and the Cog predictor can turn any of them into a
clear message and an exit code. Each message names the problem *and* the fix.
Foreign exceptions (``OSError``, ``CalledProcessError``, ``requests`` errors, ...)
are translated into these at one boundary, with ``raise ... from``.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

__all__ = [
    "ArgsError",
    "BuilderError",
    "ConfigError",
    "FetchError",
    "Interrupted",
    "LeftoverError",
    "OutputError",
    "PackagingError",
    "PreflightError",
    "SetupError",
    "StepFailed",
    "StepKilled",
    "StepTimeout",
    "UploadError",
    "VerifyError",
]


class BuilderError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class ConfigError(BuilderError):
    """The pipeline config is invalid (caught before anything runs)."""

    exit_code = 2

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class ArgsError(ConfigError):
    """A step's args do not fit the script's own argument parser."""


class PreflightError(BuilderError):
    """The plan cannot succeed on this machine (GPUs, disk, versions)."""

    exit_code = 2


class SetupError(BuilderError):
    """The image or environment is broken: TensorRT-LLM tree or tools missing."""

    exit_code = 3


class FetchError(BuilderError):
    """A model or config could not be fetched."""


class StepFailed(BuilderError):
    """A pipeline step exited non-zero.

    Carries everything a user needs, in the message itself: Cog's sync reply of a
    failed prediction has no logs.
    """

    def __init__(
        self,
        step: str,
        argv_display: str,
        returncode: int | None,
        tail: Sequence[str],
        *,
        reason: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.step = step
        self.argv_display = argv_display
        self.returncode = returncode
        self.tail = list(tail)
        self.hint = hint
        head = reason or f"step `{step}` exited with code {returncode}"
        parts = [head, f"command: {argv_display}"]
        if self.tail:
            parts.append(f"last {len(self.tail)} lines of output:")
            parts.extend("  | " + line for line in self.tail)
        else:
            parts.append("the step printed nothing")
        if hint:
            parts.append(hint)
        super().__init__("\n".join(parts))


class StepTimeout(StepFailed):
    """A step ran longer than its timeout and was stopped."""


class StepKilled(StepFailed):
    """A step was killed by a signal it did not send itself (often the OOM killer)."""


class LeftoverError(BuilderError):
    """Processes of an earlier, killed run of the same step still hold its lock."""


class Interrupted(BaseException):
    """A stop signal (SIGTERM, SIGHUP) arrived: unwind like Ctrl-C.

    A ``BaseException``, like ``KeyboardInterrupt`` and Cog's cancel, so no ``except Exception``
    swallows it. ``exit_code`` is the shell's convention, 128 + the signal number.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.signame}")


class OutputError(BuilderError):
    """A step exited 0 but did not produce what its kind must produce."""


class PackagingError(BuilderError):
    """The archive could not be written."""


class UploadError(BuilderError):
    """The archive could not be uploaded (the local copy is kept)."""


class VerifyError(BuilderError):
    """An archive's files do not match its manifest."""
