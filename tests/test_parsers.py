"""Args checked against the scripts' own argparse parsers: reading, caching, messages, and the plan."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DEFAULT_RELEASE, OLD_RELEASE, ROOT, STANDIN_BIN, TRTLLM_DIR, standin_path, tree_dir

from trtllm_builder.config.schema import load_config
from trtllm_builder.errors import ArgsError
from trtllm_builder.plan.parsers import ParserCache, ParserSpec, check_tokens, parse_help, read_parser
from trtllm_builder.plan.planner import make_plan
from trtllm_builder.plan.tree import TrtllmTree

TREE = TRTLLM_DIR
EXAMPLES = TREE / "examples"
TRTLLM_BUILD = STANDIN_BIN / "trtllm-build"
LLAMA = EXAMPLES / "models" / "core" / "llama" / "convert_checkpoint.py"
QWEN = EXAMPLES / "models" / "core" / "qwen" / "convert_checkpoint.py"
LABEL = "trtllm-build (0.21.0)"  # only a label: what messages call the program

# --- one tiny script per way a script can expose (or hide) its parser ---------------------------------

SCRIPTS = {
    # parses inside main(), after printing a banner, like every real TensorRT-LLM script
    "in_main": """
        import argparse
        def main():
            print("[TensorRT-LLM] TensorRT-LLM version: 0.21.0")
            p = argparse.ArgumentParser()
            p.add_argument("--max_seq_len", type=int)
            p.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
            p.add_argument("--use_weight_only", action="store_true")
            p.add_argument("--model_dir", required=True)
            p.parse_args()
            raise SystemExit("real work must never start")
        if __name__ == "__main__":
            main()
    """,
    # parses at import time
    "at_import": """
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--alpha", type=float)
        args = p.parse_args()
        raise SystemExit("real work must never start")
    """,
    # flags generated in a loop and a helper module next to the script (like run.py + utils.py)
    "loop_and_sibling": """
        import argparse
        from helper_mod import add_common
        p = argparse.ArgumentParser()
        for name in ("gemm_plugin", "nccl_plugin"):
            p.add_argument("--" + name, choices=["auto", "float16", "disable"], default="auto")
        add_common(p)
        p.parse_known_args()
    """,
    # builds its command line by hand: only --help tells
    "no_parser": """
        import sys
        if "--help" in sys.argv:
            print("usage: no_parser.py [--steps N]")
            print()
            print("options:")
            print("  --steps N             how many steps")
            print("  --mode {fast,slow}    speed")
            print("  --verbose             talk")
            sys.exit(0)
    """,
    # cannot even be imported here (like a real script without tensorrt_llm installed)
    "broken": """
        import tensorrt_llm_that_is_not_installed
    """,
}
HELPER = """
def add_common(p):
    p.add_argument("--num_beams", type=int, default=1)
"""


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        d = tmp_path / "scripts"
        d.mkdir(exist_ok=True)
        (d / "helper_mod.py").write_text(HELPER)
        path = d / f"{name}.py"
        path.write_text(textwrap.dedent(SCRIPTS[name]))
        return path

    return make


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def trtllm_build_spec(tmp_path_factory: pytest.TempPathFactory) -> ParserSpec:
    spec = read_parser([str(TRTLLM_BUILD)], cache_dir=tmp_path_factory.mktemp("tb"))
    assert spec is not None
    return spec


def _read(path: Path, cache_dir: Path) -> ParserSpec:
    spec = read_parser([sys.executable, str(path)], cache_dir=cache_dir)
    assert spec is not None
    return spec


# --- reading ------------------------------------------------------------------------------------------


def test_trtllm_build_plugin_flags_generated_in_a_loop_are_read(trtllm_build_spec: ParserSpec) -> None:
    spec = trtllm_build_spec
    gemm = spec.option("--gemm_plugin")
    assert gemm is not None and gemm.choices is not None and {"auto", "fp8", "disable"} <= set(gemm.choices)
    swiglu = spec.option("--gemm_swiglu_plugin")
    assert swiglu is not None and swiglu.choices == ("fp8", "disable")
    fmha = spec.option("--use_paged_context_fmha")
    assert fmha is not None and fmha.choices == ("enable", "disable")
    seq = spec.option("--max_decoder_seq_len")
    assert seq is not None and seq is spec.option("--max_seq_len") and seq.type_name == "int"
    strip = spec.option("--strip_plan")
    assert strip is not None and not strip.takes_value
    assert spec.option("--max_output_len") is None
    assert {"checkpoint_dir", "output_dir"} <= spec.flag_names()


def test_parser_read_in_main_after_a_banner(script: Callable[[str], Path], cache_dir: Path) -> None:
    spec = _read(script("in_main"), cache_dir)
    assert spec.source == "parser" and spec.method == "parse_args"
    dtype = spec.option("--dtype")
    assert dtype is not None and dtype.choices == ("float16", "bfloat16") and dtype.default == "float16"
    model = spec.option("--model_dir")
    assert model is not None and model.required


def test_parser_read_at_import(script: Callable[[str], Path], cache_dir: Path) -> None:
    alpha = _read(script("at_import"), cache_dir).option("--alpha")
    assert alpha is not None and alpha.type_name == "float"


def test_loop_flags_sibling_module_and_parse_known_args(script: Callable[[str], Path], cache_dir: Path) -> None:
    spec = _read(script("loop_and_sibling"), cache_dir)
    assert spec.method == "parse_known_args"
    assert spec.option("--nccl_plugin") is not None and spec.option("--num_beams") is not None
    # a script that parses with parse_known_args may take unknown flags elsewhere: a note, not an error
    problems, notes = check_tokens(spec, ["--mystery", "1"], label="x.py")
    assert problems == [] and "parse_known_args" in notes[0]


def test_script_without_a_parser_falls_back_to_its_help(script: Callable[[str], Path], cache_dir: Path) -> None:
    spec = _read(script("no_parser"), cache_dir)
    assert spec.source == "help"
    mode = spec.option("--mode")
    assert mode is not None and mode.choices == ("fast", "slow")
    verbose = spec.option("--verbose")
    assert verbose is not None and not verbose.takes_value
    assert check_tokens(spec, ["--mode", "warp"], label="no_parser.py")[0] == ["`--mode warp` is not one of fast, slow"]


def test_unreadable_parser_is_reported_not_guessed(script: Callable[[str], Path], cache_dir: Path) -> None:
    cache = ParserCache(cache_dir)
    found = cache.lookup([sys.executable, str(script("broken"))])
    assert found.spec is None
    assert "ModuleNotFoundError" in (found.problem or "") and "exit 1" in (found.problem or "")
    assert "its args are passed unchecked" in (found.note() or "")
    assert not (cache_dir / "parsers").exists() or not list((cache_dir / "parsers").iterdir())


def test_help_text_with_aliases_and_nargs() -> None:
    text = textwrap.dedent(
        """\
        [TensorRT-LLM] TensorRT-LLM version: 0.21.0
        usage: x [-h] [--lora_dir LORA_DIR [LORA_DIR ...]]
        options:
          -h, --help            show this help message and exit
          -sq SMOOTHQUANT, --smoothquant SMOOTHQUANT
                                alpha
          --lora_dir LORA_DIR [LORA_DIR ...]
          --weight_only_precision [{int8,int4}]
        """
    )
    spec = parse_help(text)
    assert spec is not None
    sq = spec.option("--smoothquant")
    assert sq is not None and sq is spec.option("-sq") and sq.takes_value
    lora = spec.option("--lora_dir")
    assert lora is not None and lora.nargs == "+"
    wop = spec.option("--weight_only_precision")
    assert wop is not None and wop.nargs == "?" and wop.choices == ("int8", "int4")


# --- the cache ----------------------------------------------------------------------------------------


def test_cache_warm_read_runs_nothing_and_a_changed_script_is_read_again(tmp_path: Path, cache_dir: Path) -> None:
    script = tmp_path / "ex" / "convert_checkpoint.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(SCRIPTS["in_main"]))
    program = [sys.executable, str(script)]

    cold = ParserCache(cache_dir)
    t0 = time.monotonic()
    assert cold.lookup(program).spec is not None
    cold_s = time.monotonic() - t0
    assert cold.runs == 1
    assert len(list((cache_dir / "parsers").glob("*.json"))) == 1

    warm = ParserCache(cache_dir)  # a new process: only the disk cache is shared
    t0 = time.monotonic()
    hit = warm.lookup(program)
    warm_s = time.monotonic() - t0
    assert hit.cached and hit.spec is not None and warm.runs == 0
    assert warm_s < cold_s

    script.write_text(script.read_text().replace('"--max_seq_len"', '"--max_sequence_length"'))
    again = ParserCache(cache_dir)
    fresh = again.lookup(program)
    assert again.runs == 1 and not fresh.cached
    assert fresh.spec is not None and fresh.spec.option("--max_sequence_length") is not None
    assert fresh.spec.option("--max_seq_len") is None

    # a changed sibling module (run.py's utils.py) invalidates it as well
    (script.parent / "utils.py").write_text("X = 1\n")
    sibling = ParserCache(cache_dir)
    assert not sibling.lookup(program).cached and sibling.runs == 1


def test_corrupt_cache_entry_is_read_again(script: Callable[[str], Path], cache_dir: Path) -> None:
    program = [sys.executable, str(script("at_import"))]
    ParserCache(cache_dir).lookup(program)
    (entry,) = (cache_dir / "parsers").glob("*.json")
    entry.write_text("{not json")
    cache = ParserCache(cache_dir)
    assert cache.lookup(program).spec is not None and cache.runs == 1
    assert json.loads(entry.read_text())["format"] == 1


# --- messages -----------------------------------------------------------------------------------------


def test_unknown_flag_names_the_closest_real_ones(trtllm_build_spec: ParserSpec) -> None:
    problems, _ = check_tokens(trtllm_build_spec, ["--max_output_len", "512"], label=LABEL)
    # without the program the table cannot say what replaced it: the closest spellings
    assert problems == [
        "`--max_output_len` is not a flag of trtllm-build (0.21.0); did you mean `--max_input_len`, "
        "`--max_encoder_input_len`, `--max_draft_len`?"
    ]
    problems, _ = check_tokens(trtllm_build_spec, ["--gemm_plugn", "auto"], label=LABEL)
    assert problems[0].startswith("`--gemm_plugn` is not a flag of trtllm-build (0.21.0); did you mean `--gemm_plugin`")


@pytest.mark.parametrize(
    ("tokens", "rewrite"),
    [
        (["--max_input_len", "1024", "--max_output_len", "512"],
         "write `max_seq_len: 1536` instead (max_input_len 1024 + max_output_len 512: --max_seq_len counts the "
         "input and the output tokens)"),
        (["--max_output_len", "512"], "write `max_seq_len: 1536` instead (the default max_input_len of trtllm-build "
         "1024 + max_output_len 512: --max_seq_len counts the input and the output tokens)"),
        (["--use_gpt_attention_plugin"],
         "it is `gpt_attention_plugin: auto` now, the default: remove `use_gpt_attention_plugin`"),
        (["--use_gemm_plugin", "float16"], "write `gemm_plugin: float16` on trtllm-build instead"),
        (["--use_weight_only"], "write `use_weight_only: true` on the convert step instead (set at conversion now: "
         "it goes to the converter)"),
        (["--enable_context_fmha"], "remove it: context FMHA is on by default (`context_fmha: enable`)"),
        (["--use_custom_all_reduce", "disable"], "remove it: the all-reduce strategy is chosen at run time now"),
        (["--enable_fp8"], "there is no such flag any more: FP8 needs ModelOpt calibration now (build.py read ammo "
         "scales); instead: a quantize step: `example: quantization, script: quantize.py, args: {qformat: fp8}`"),
    ],
)  # fmt: skip
def test_old_flags_get_their_exact_rewrite(trtllm_build_spec: ParserSpec, tokens: list[str], rewrite: str) -> None:
    """The project form rewrites nothing silently: an old flag's message says exactly what to write."""
    problems, _ = check_tokens(trtllm_build_spec, tokens, label=LABEL, program="trtllm-build")
    flag = next(t for t in tokens if t in ("--max_output_len",) or t not in ("--max_input_len", "1024"))
    assert problems == [f"`{flag}` is not a flag of trtllm-build (0.21.0); {rewrite}"]


def test_abbreviations_are_refused_even_when_argparse_would_take_them(
    script: Callable[[str], Path], cache_dir: Path
) -> None:
    spec = _read(script("in_main"), cache_dir)
    problems, _ = check_tokens(spec, ["--model_dir", "m", "--max_seq", "8"], label="in_main.py")
    assert problems == [
        "`--max_seq` is not a flag of in_main.py; did you mean `--max_seq_len`? "
        "(abbreviated flags are not accepted: write the full name)"
    ]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["--gemm_plugin", "flaot16"], "`--gemm_plugin flaot16` is not one of auto, float16, float32, bfloat16, int32, "
         "fp8, nvfp4, disable; did you mean `float16`?"),
        (["--max_batch_size", "two"], "`--max_batch_size two`: not a whole number"),
        (["--strip_plan", "yes"], "`--strip_plan` is a switch and takes no value (got `yes`): write "
         "`strip_plan: true` to pass it or `strip_plan: false` to leave it out"),
        (["--context_fmha"], "`--context_fmha` needs a value (one of enable, disable): write `context_fmha: enable`"),
        (["--max_batch_size", "1", "2"], "`--max_batch_size` takes one value, got 2 (`1 2`)"),
        (["--lora_dir"], "`--lora_dir` needs at least one value: write `lora_dir: [a, b]`"),
        (["--max_seq_len", "9", "--max_decoder_seq_len", "9"], "`--max_seq_len` and `--max_decoder_seq_len` set "
         "the same option of trtllm-build (0.21.0): give one"),
        (["--lora_target_modules", "attn_q", "attn_z"], "`--lora_target_modules attn_z` is not one of attn_qkv, "),
    ],
)  # fmt: skip
def test_value_messages(trtllm_build_spec: ParserSpec, tokens: list[str], message: str) -> None:
    problems, _ = check_tokens(trtllm_build_spec, tokens, label=LABEL)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_valid_args_pass(trtllm_build_spec: ParserSpec) -> None:
    tokens = ["--checkpoint_dir", "{steps.convert.output_dir}", "--max_batch_size", "8", "--gemm_plugin", "auto",
              "--strip_plan", "--lora_target_modules", "attn_q", "attn_v", "--max_draft_len", "0"]  # fmt: skip
    assert check_tokens(trtllm_build_spec, tokens, label=LABEL) == ([], [])


def test_missing_required_flag(tmp_path: Path) -> None:
    spec = read_parser([sys.executable, str(QWEN)], cache_dir=tmp_path)
    assert spec is not None
    problems, _ = check_tokens(spec, ["--dtype", "float16"], label="models/core/qwen/convert_checkpoint.py (0.21.0)")
    assert problems == [
        "`--model_dir` is required by models/core/qwen/convert_checkpoint.py (0.21.0): add `model_dir: ...` to the args"
    ]


# --- in the plan --------------------------------------------------------------------------------------

BAD = """\
model: {id: meta-llama/Llama-3.1-8B-Instruct}
trtllm: {example: llama}
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {dtype: float16, tp_size: two, use_weight_only: true, weight_only_precision: int3}
  - name: build
    command: trtllm-build
    args: {max_output_len: 512, gemm_plugin: auto, max_batch_size: 8}
"""


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", standin_path(rest="/usr/bin:/bin"))


def _plan(text: str, tmp_path: Path, cache_dir: Path, *, tree: Path = TREE) -> object:
    return make_plan(load_config(text), TrtllmTree(tree.resolve()), tmp_path / "work",
                     parsers=ParserCache(cache_dir, version="0.21.0"))  # fmt: skip


def test_plan_lists_every_misfit_at_once(tmp_path: Path, cache_dir: Path, on_path: None) -> None:
    with pytest.raises(ArgsError) as err:
        _plan(BAD, tmp_path, cache_dir)
    assert err.value.exit_code == 2
    assert err.value.problems == [
        "step `convert`: `--tp_size two`: not a whole number",
        "step `convert`: `--weight_only_precision int3` is not one of int8, int4, int8_gptq, int4_gptq, int4_awq; "
        "did you mean `int8`?",
        "step `build`: `--max_output_len` is not a flag of trtllm-build (0.21.0); write `max_seq_len: 1536` "
        "instead (the default max_input_len of trtllm-build 1024 + max_output_len 512: --max_seq_len counts the "
        "input and the output tokens)",
    ]


def test_plan_shows_validated_argv_and_injects_the_real_flag_spelling(
    tmp_path: Path, cache_dir: Path, on_path: None
) -> None:
    text = """\
model: {id: google/gemma-2b}
trtllm: {example: gemma}
steps:
  - {name: convert, script: convert_checkpoint.py, args: {ckpt-type: hf, world-size: 1}}
  - {name: build, command: trtllm-build, args: {max_batch_size: 8}}
"""
    plan = _plan(text, tmp_path, cache_dir)
    out = plan.describe()  # type: ignore[attr-defined]
    assert "args checked against the parser of models/core/gemma/convert_checkpoint.py (0.21.0)" in out
    assert "args checked against the parser of trtllm-build (0.21.0)" in out
    assert "--model_dir" in out and "--output_dir" in out  # gemma's aliases of --model-dir/--output-model-dir


def test_legacy_form_gets_the_same_checks(tmp_path: Path, cache_dir: Path, on_path: None) -> None:
    """Against the old tree the seed config runs as written, checked against the old scripts' parsers."""
    legacy = (ROOT / "examples" / "cog-trt-llm" / "tiny-gpt2.yaml").read_text()
    old = tree_dir(OLD_RELEASE)
    _plan(legacy, tmp_path, cache_dir, tree=old)  # the seed config fits the old scripts' parsers
    bad = legacy.replace("use_gpt_attention_plugin:", "use_gpt_attention_plugn:").replace(
        "storage-type: float16", "storage-type: float8"
    )
    with pytest.raises(ArgsError) as err:
        _plan(bad, tmp_path, cache_dir, tree=old)
    text = str(err.value)
    assert "step `convert_to_ft`: `--storage-type float8` is not one of float32, float16, bfloat16" in text
    assert "step `build`: `--use_gpt_attention_plugn` is not a flag of gpt/build.py (0.21.0); did you mean " \
           "`--use_gpt_attention_plugin`" in text  # fmt: skip


def test_unreadable_parser_is_a_visible_note(tmp_path: Path, cache_dir: Path, on_path: None) -> None:
    tree = tmp_path / "TensorRT-LLM"
    (tree / "examples" / "broken").mkdir(parents=True)
    (tree / "examples" / "broken" / "convert_checkpoint.py").write_text("import tensorrt_llm_is_missing_here\n")
    text = """\
model: {id: org/model}
trtllm: {example: broken}
steps:
  - {name: convert, script: convert_checkpoint.py, args: {anything: 1}}
  - {name: build, command: trtllm-build, args: {max_batch_size: 8}}
"""
    plan = make_plan(load_config(text), TrtllmTree(tree.resolve()), tmp_path / "work",
                     parsers=ParserCache(cache_dir, version="0.21.0"))  # fmt: skip
    (note,) = [n for n in plan.notes if "could not be read" in n]
    assert note.startswith("parser of `broken/convert_checkpoint.py` could not be read (exit 1: ModuleNotFoundError")
    assert note.endswith("its args are passed unchecked")
    assert "args NOT checked (see the notes)" in plan.describe()
    assert plan.steps[0].checked_by is None and plan.steps[1].checked_by == "trtllm-build (0.21.0)"


# --- warm-parsers -------------------------------------------------------------------------------------


def _help_reads(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if json.loads(line)["argv"] == ["--help"])


def test_warm_parsers_then_plan_reads_nothing(run_cli: Callable[..., subprocess.CompletedProcess[str]],
                                              standin_env: dict[str, str], tmp_path: Path) -> None:  # fmt: skip
    warm = run_cli("warm-parsers", "--trtllm-dir", str(TREE))
    assert warm.returncode == 0, warm.stderr
    assert "ok    trtllm-build:" in warm.stdout and "ok    models/core/llama/convert_checkpoint.py:" in warm.stdout
    m = re.search(r"^(\d+) of (\d+) parsers cached", warm.stdout, re.M)
    # trtllm-build, five converters, quantize.py, run.py
    assert m is not None and m.group(1) == m.group(2) and int(m.group(1)) == 8, warm.stdout
    count = int(m.group(1))
    log = Path(standin_env["STANDIN_LOG"])
    reads = _help_reads(log)
    assert reads == count  # each stand-in logs its invocation before parsing: one read per script

    cfg = tmp_path / "c.yaml"
    cfg.write_text((ROOT / "examples" / "llama" / "llama-3.1-8b-fp16.yaml").read_text())
    plan = run_cli("plan", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert f"args checked against the parser of trtllm-build ({DEFAULT_RELEASE})" in plan.stdout
    assert _help_reads(log) == reads  # served from the cache: no script ran

    again = run_cli("warm-parsers", "--trtllm-dir", str(TREE))
    assert again.stdout.count("(cached)") == count and _help_reads(log) == reads


def test_cli_plan_exits_2_with_every_problem(run_cli: Callable[..., subprocess.CompletedProcess[str]],
                                             tmp_path: Path) -> None:  # fmt: skip
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD)
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2
    assert "error: the step args do not fit the scripts' own parsers:" in res.stderr
    assert res.stderr.count("  - step `") == 3
