"""Check an engine archive against its ``manifest.json``, and whether this machine can serve it.

The archive is read once, as a stream, the way ``tar -xzf`` reads it (every gzip member, the
last copy of a name wins: see :mod:`.tarview`): every member is hashed while it passes, in
fixed-size chunks, so memory stays flat whatever the engine size. ``manifest.json`` is the
archive's last member (see docs/CONTRACTS.md); the comparison happens after the stream ends, so
an archive written in another order is checked the same way. Whatever trtllm-builder never
writes and ``tar`` could unpack differently (joined gzip streams, duplicate names, links, paths
out of the target dir, trailing data) makes the archive not intact.
"""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtllm_builder.package.tarview import scan_archive
from trtllm_builder.plan.gpu import GpuInfo, detect_gpus
from trtllm_builder.plan.versions import serving_runtime
from trtllm_builder.plan.versions import trtllm_version as local_trtllm_version
from trtllm_builder.progress import format_bytes

__all__ = ["FileMismatch", "InspectReport", "format_report", "inspect_archive", "triton_problems"]

MANIFEST_NAME = "manifest.json"
SUPPORTED_FORMAT_VERSIONS = (1,)
_MANIFEST_MAX_BYTES = 64 * 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Members a Triton repository check reads: configs, Python models, engine config, tokenizer files.
_TRITON_TEXT_SUFFIXES = (".pbtxt", ".py", ".json", ".txt", ".model", ".tiktoken", ".jinja")
_TRITON_TEXT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class FileMismatch:
    """A listed file whose content differs from the manifest."""

    path: str
    expected_sha256: str
    expected_size: int
    actual_sha256: str
    actual_size: int


@dataclass
class InspectReport:
    """What :func:`inspect_archive` found.

    ``intact``: every listed file is present with its sha256 and size, nothing else is
    in the archive, and nothing in it makes ``tar -xzf`` unpack something else. ``contents`` is
    what ``tar -xzf`` extracts (name -> (sha256, size)), ``gzip_members`` how many gzip streams
    the file joins (trtllm-builder writes one). ``servable``: ``True``/``False`` when this machine's GPUs and
    TensorRT-LLM version can/cannot run the engine, ``None`` when that cannot be told
    (no GPU visible, versions unknown). ``ok`` is ``intact`` and not known-unservable.
    """

    archive: Path
    manifest: dict[str, Any] | None = None
    files_verified: int = 0
    bytes_verified: int = 0
    mismatched: list[FileMismatch] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    gpus: list[GpuInfo] = field(default_factory=list)
    local_trtllm_version: str | None = None
    compatibility: list[str] = field(default_factory=list)
    servable: bool | None = None
    triton: list[str] | None = None  # Triton repository problems; None when the archive is not one
    contents: dict[str, tuple[str, int]] = field(default_factory=dict)
    gzip_members: int = 0

    @property
    def intact(self) -> bool:
        return self.manifest is not None and not (self.mismatched or self.missing or self.unlisted or self.problems)

    @property
    def ok(self) -> bool:
        return self.intact and self.servable is not False and not self.triton


def inspect_archive(
    archive: Path,
    *,
    gpus: list[GpuInfo] | None = None,
    trtllm_version: str | None = None,
) -> InspectReport:
    """Verify ``archive`` (a ``.tar.gz``) against its manifest and this machine.

    ``gpus`` and ``trtllm_version`` describe the machine that would serve the engine;
    ``None`` detects them (``nvidia-smi``, the installed ``tensorrt_llm``). Pass
    ``gpus=[]`` to skip detection. Raises :class:`~.errors.VerifyError` only when the file
    cannot be read as an archive at all; everything else is reported.
    """
    archive = Path(archive)
    report = InspectReport(archive=archive)

    def captured(name: str, size: int) -> bool:
        # the manifest, and the small text members a Triton repository check reads
        return name == MANIFEST_NAME or (name.endswith(_TRITON_TEXT_SUFFIXES) and size <= _TRITON_TEXT_MAX_BYTES)

    view = scan_archive(archive, capture=captured, capture_max=max(_MANIFEST_MAX_BYTES, _TRITON_TEXT_MAX_BYTES))
    report.problems.extend(view.problems)
    report.gzip_members = view.gzip_members
    actual = {name: entry for name, entry in view.files.items() if name != MANIFEST_NAME}
    report.contents = dict(view.files)
    manifest_bytes = view.captured.get(MANIFEST_NAME)
    kept = {name: data for name, data in view.captured.items() if name != MANIFEST_NAME}
    manifest = _load_manifest(manifest_bytes, report)
    if manifest is not None:
        report.manifest = manifest
        _compare(manifest, actual, report)
        output = _section(manifest, "output")
        if output.get("format") == "triton":
            version = _section(manifest, "trtllm").get("version")
            reads = _section(output, "triton").get("cpp_reads")
            report.triton = triton_problems(
                kept,
                actual,
                version if isinstance(version, str) else None,
                cpp_reads=reads if isinstance(reads, list) and all(isinstance(r, str) for r in reads) else None,
            )

    report.gpus = detect_gpus() if gpus is None else list(gpus)
    report.local_trtllm_version = local_trtllm_version(None) if trtllm_version is None else trtllm_version
    if manifest is not None:
        report.servable, report.compatibility = _compatibility(manifest, report.gpus, report.local_trtllm_version)
    return report


def triton_problems(
    texts: Mapping[str, bytes],
    names: Iterable[str],
    trtllm_version: str | None,
    *,
    cpp_reads: Iterable[str] | None = None,
) -> list[str]:
    """Run the Triton repository verifier on archive members.

    ``texts``: the content of the small text members (configs, ``model.py``, JSON, tokenizer
    files); ``names``: every member, large ones (engines) only by name. They are laid out in a
    temporary folder, large members as empty files, which is all the verifier reads of them.
    ``cpp_reads`` (the manifest's ``output.triton.cpp_reads``: what the C++ backend of the
    templates used reads without a fallback), else ``trtllm_version`` picks those reads.
    """
    from trtllm_builder.outputs.tritonverify import repository_problems

    with tempfile.TemporaryDirectory(prefix="trtllm-builder-inspect-") as tmp:
        root = Path(tmp)
        for name in sorted(set(names) | set(texts)):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(texts.get(name, b""))
        return repository_problems(root, cpp_declared=cpp_reads, backend_version=trtllm_version)


def _load_manifest(data: bytes | None, report: InspectReport) -> dict[str, Any] | None:
    if data is None:
        report.problems.append(
            f"no {MANIFEST_NAME} in the archive: it was not written by trtllm-builder or is cut short"
        )
        return None
    if len(data) > _MANIFEST_MAX_BYTES:
        report.problems.append(f"{MANIFEST_NAME} is larger than {_MANIFEST_MAX_BYTES // 2**20} MiB; not a manifest")
        return None
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        report.problems.append(f"{MANIFEST_NAME} is not valid JSON: {exc}")
        return None
    if not isinstance(manifest, dict):
        report.problems.append(f"{MANIFEST_NAME} is not a JSON object")
        return None
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        report.problems.append(
            f"{MANIFEST_NAME} format_version {version!r} is not one this trtllm-builder reads "
            f"({', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); upgrade trtllm-builder"
        )
        return None
    return manifest


def _compare(manifest: dict[str, Any], actual: dict[str, tuple[str, int]], report: InspectReport) -> None:
    files = manifest.get("files")
    if not isinstance(files, list):
        report.problems.append(f"{MANIFEST_NAME} has no `files` list")
        return
    listed: set[str] = set()
    for index, entry in enumerate(files):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), str)
            and _SHA256_RE.match(entry["sha256"])
            and isinstance(entry.get("size"), int)
            and not isinstance(entry.get("size"), bool)
        ):
            report.problems.append(f"{MANIFEST_NAME} files[{index}] is not {{path, sha256 (64 hex), size}}")
            continue
        raw = entry["path"]
        path = posixpath.normpath(raw) if raw and not raw.startswith("/") and ".." not in raw.split("/") else None
        if path is None:
            report.problems.append(f"{MANIFEST_NAME} lists unsafe path {entry['path']!r}")
            continue
        if path in listed:
            report.problems.append(f"{MANIFEST_NAME} lists {path} twice")
            continue
        listed.add(path)
        if path not in actual:
            report.missing.append(path)
            continue
        sha, size = actual[path]
        if sha == entry["sha256"] and size == entry["size"]:
            report.files_verified += 1
            report.bytes_verified += size
        else:
            report.mismatched.append(FileMismatch(path, entry["sha256"], entry["size"], sha, size))
    report.unlisted.extend(sorted(set(actual) - listed))


# --------------------------------------------------------------------------- compatibility


def _compatibility(
    manifest: dict[str, Any], gpus: list[GpuInfo], local_version: str | None
) -> tuple[bool | None, list[str]]:
    lines: list[str] = []
    verdicts: list[bool | None] = []

    built_gpus = manifest.get("gpus") or []
    built = built_gpus[0] if isinstance(built_gpus, list) and built_gpus and isinstance(built_gpus[0], dict) else {}
    cap = built.get("compute_capability")
    built_name = built.get("name") or "unknown GPU"
    engine = _section(manifest, "engine")
    world_size = engine.get("world_size")
    world = world_size if isinstance(world_size, int) and world_size > 0 else 1
    if not isinstance(cap, str):
        lines.append("GPU: the manifest records no compute capability; cannot tell which GPUs can run this engine")
        verdicts.append(None)
    elif not gpus:
        lines.append(
            f"GPU: built for compute capability {cap} ({built_name}); no NVIDIA GPU visible on this machine "
            "(nvidia-smi missing or failing), so it cannot be served here"
        )
        verdicts.append(None)
    else:
        matching = [g for g in gpus if g.compute_capability == cap]
        local = ", ".join(sorted({f"{g.compute_capability} ({g.name})" for g in gpus}))
        if not matching:
            lines.append(
                f"GPU: built for compute capability {cap} ({built_name}); this machine has {local}: "
                f"the engine will fail with 'expecting compute {cap}'; rebuild on a matching GPU"
            )
            verdicts.append(False)
        elif len(matching) < world:
            lines.append(
                f"GPU: the engine needs {world} GPUs of compute capability {cap} (world size {world}); this "
                f"machine has {len(matching)}: serve it on a machine with {world} such GPUs, or rebuild with a "
                f"smaller tp_size x pp_size"
            )
            verdicts.append(False)
        else:
            lines.append(
                f"GPU: built for compute capability {cap} ({built_name}); this machine has {len(matching)} "
                f"matching GPU(s), {world} needed: ok"
            )
            verdicts.append(True)

    trtllm = _section(manifest, "trtllm")
    built_version = trtllm.get("version")
    if not isinstance(built_version, str):
        lines.append("TensorRT-LLM: the manifest records no version; make sure the serving version is the build one")
        verdicts.append(None)
    elif local_version is None:
        lines.append(
            f"TensorRT-LLM: built with {built_version}; not installed here, so the serving runtime is unknown: "
            f"serve it with tensorrt_llm=={built_version}"
        )
        verdicts.append(None)
    elif local_version != built_version:
        lines.append(
            f"TensorRT-LLM: built with {built_version}; this machine has {local_version}: the engine will fail to "
            f"load (serialization version mismatch); install tensorrt_llm=={built_version} or rebuild with "
            f"{local_version}"
        )
        verdicts.append(False)
    else:
        lines.append(f"TensorRT-LLM: built with {built_version}; this machine has {local_version}: ok")
        verdicts.append(True)

    if False in verdicts:
        return False, lines
    if None in verdicts:
        return None, lines
    return True, lines


# --------------------------------------------------------------------------- text


def format_report(report: InspectReport) -> str:
    """A human summary: what the archive holds, whether it is intact, whether this machine can serve it."""
    out = [f"archive: {report.archive}"]
    manifest = report.manifest or {}
    model = _section(manifest, "model")
    if model:
        revision = model.get("revision") or "no revision"
        out.append(f"model: {model.get('id', '?')} ({model.get('source', '?')}, {revision})")
    tool = _section(manifest, "tool")
    if manifest:
        out.append(f"built: {manifest.get('created_at', '?')} by {tool.get('name', '?')} {tool.get('version', '?')}")
    engine = _section(manifest, "engine")
    if engine:
        out.append(
            f"engine: world size {engine.get('world_size', '?')} (tp {engine.get('tp_size', '?')}, "
            f"pp {engine.get('pp_size', '?')}), {engine.get('dtype', '?')}"
        )

    if report.intact:
        out.append(
            f"integrity: ok, {report.files_verified} file(s), {format_bytes(report.bytes_verified, binary=True)}, "
            f"match {MANIFEST_NAME}"
        )
    else:
        out.append("integrity: FAILED")
        for problem in report.problems:
            out.append(f"  - {problem}")
        for m in report.mismatched:
            what = "size and sha256 differ" if m.actual_size != m.expected_size else "sha256 differs"
            out.append(
                f"  - {m.path}: {what} (manifest {m.expected_size} B sha256 {m.expected_sha256[:12]}..., "
                f"archive {m.actual_size} B sha256 {m.actual_sha256[:12]}...): modified or corrupted"
            )
        for path in report.missing:
            out.append(f"  - {path}: listed in {MANIFEST_NAME} but not in the archive")
        for path in report.unlisted:
            out.append(f"  - {path}: in the archive but not listed in {MANIFEST_NAME}")
        if report.mismatched or report.missing or report.unlisted:
            out.append("  download the archive again, or rebuild it; do not serve it as is")

    if report.triton is not None:
        if report.triton:
            out.append("Triton repository: NOT LOADABLE")
            out.extend(f"  - {p}" for p in report.triton)
        else:
            out.append("Triton repository: ok (configs, ensemble wiring, loader parameters, engine ranks, tokenizer)")

    out.extend(_serving_lines(manifest))
    if report.compatibility:
        out.append("this machine:")
        out.extend(f"  - {line}" for line in report.compatibility)

    if not report.intact:
        out.append("verdict: NOT OK: the archive does not match its manifest")
    elif report.triton:
        out.append("verdict: NOT OK: Triton would not load this repository (see above)")
    elif report.servable is False:
        out.append("verdict: NOT OK: intact, but this machine cannot serve it (see above)")
    elif report.servable is None:
        out.append("verdict: OK: intact; whether this machine can serve it is unknown (see above)")
    else:
        out.append("verdict: OK: intact, and this machine can serve it")
    return "\n".join(out)


def _serving_lines(manifest: dict[str, Any]) -> list[str]:
    """Where the engine can be served: the manifest's ``serving`` record, else the release table."""
    version = _section(manifest, "trtllm").get("version")
    serving = _section(manifest, "serving") or serving_runtime(version if isinstance(version, str) else None) or {}
    containers = serving.get("tritonserver")
    if not isinstance(version, str):
        return []
    if not isinstance(containers, list) or not containers:
        return [f"serve with: TensorRT-LLM {version} (no known tritonserver container ships it; use that release)"]
    return [f"serve with: TensorRT-LLM {version}, e.g. " + ", ".join(str(c) for c in containers)]


def _section(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    value = manifest.get(key)
    return value if isinstance(value, dict) else {}
