#!/usr/bin/env bash
# Install everything the tests need (from scratch on a fresh machine), run ruff and mypy, and the whole
# suite twice (the Hub tests three times); the last two installs run beside ruff and mypy, and the
# pytest runs side by side:
#
#   1. .venv        this machine's python3 and the NEWEST release of every dependency: ruff, mypy, pytest
#   2. .venv-image  Python 3.12 and the GPU image's own versions, taken from the default lock
#                   requirements/trtllm-<default>.txt (huggingface_hub 0.3x, numpy, pydantic, boto3 ... as
#                   the image has them): pytest
#   3. .venv-hf1    the newest huggingface_hub 1.x (the major between the image's 0.x and the newest 2.x,
#                   e.g. what the GPU host on loan has): the tests of everything that talks to the Hub
#
# Extra arguments go to every pytest run. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

default=$(sed -n 's/^DEFAULT_TRTLLM_VERSION = "\(.*\)"$/\1/p' trtllm_builder/plan/versions.py)
lock=requirements/trtllm-${default}.txt
[ -f "$lock" ] || { echo "scripts/test.sh: no lock $lock for the default release '$default'" >&2; exit 1; }

# Python 3.12 (the image's): pyenv's build if there is one (its python3.12 shim fails unless 3.12 is
# selected), else a python3.12 on PATH that really runs.
py312=
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python python3.12; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
        py312=$candidate
        break
    fi
done
[ -n "$py312" ] || { echo "scripts/test.sh: Python 3.12 (the image's Python) is needed for the second run; install it (e.g. pyenv install 3.12)" >&2; exit 1; }

install() {  # install VENV PYTHON [PIP ARGS...]: VENV (made if missing) with the project and its test extras
    local venv=$1 python=$2
    shift 2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e '.[test]' "$@"
}

logs=$(mktemp -d "${TMPDIR:-/tmp}/trtllm-builder-tests.XXXXXX")
cleanup() {  # on any exit: stop what still runs in the background (after a failure), remove the logs
    local pids
    pids=$(jobs -p)
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    rm -rf "$logs"
}
trap cleanup EXIT  # returns 0, so the script's own exit status stands
step() { echo "== $* (at ${SECONDS}s)"; }

step "install: newest releases ($(python3 --version))"
install .venv python3

# The other two virtualenvs install in the background while ruff and mypy (from .venv) run: each
# of the three is mostly one core waiting on the other.
step "install, in the background: the image's versions ($("$py312" --version), constraints from $lock) and huggingface_hub 1.x"
# Only the pins: the lock's index lines name NVIDIA's and PyTorch's indexes, which the tests never need.
mkdir -p .venv-image
grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$lock" > .venv-image/constraints.txt
install .venv-image "$py312" -c .venv-image/constraints.txt > "$logs/install-image.log" 2>&1 & install_image=$!
install .venv-hf1 python3 'huggingface_hub>=1,<2' > "$logs/install-hf1.log" 2>&1 & install_hf1=$!

step ruff
.venv/bin/ruff check trtllm_builder predict.py scripts bench tests
step mypy
.venv/bin/mypy

for pair in "image:$install_image" "hf1:$install_hf1"; do
    IFS=: read -r name pid <<< "$pair"
    wait "$pid" || { echo "scripts/test.sh: installing .venv-$name failed:" >&2; cat "$logs/install-$name.log" >&2; exit 1; }
done
step "installed all three virtualenvs"

# The three pytest runs go side by side (most of a run is waiting on subprocesses and servers, so
# together they take little longer than the slowest alone); each one's output is printed whole when
# it ends, and the script fails if any run failed.
run() {  # run NAME VENV [PYTEST ARGS...]: one pytest run in VENV, its output in $logs/NAME.log
    local name=$1 venv=$2
    shift 2
    {
        "$venv/bin/python" -c 'import huggingface_hub, sys; print(f"Python {sys.version.split()[0]}, huggingface_hub {huggingface_hub.__version__}")'
        PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest "$@"
    } > "$logs/$name.log" 2>&1
}
step "pytest: three runs side by side (logs in $logs)"
run newest .venv "$@" & newest=$!
run image .venv-image "$@" & image=$!
run hf1 .venv-hf1 "$@" tests/test_sources_hf.py tests/test_hub_download.py tests/test_recipes.py tests/test_leaks.py & hf1=$!
status=0
for pair in "newest:$newest:newest releases" "image:$image:the image's versions ($lock)" "hf1:$hf1:huggingface_hub 1.x (the Hub's tests)"; do
    IFS=: read -r name pid title <<< "$pair"
    rc=0
    wait "$pid" || rc=$?
    step "pytest: $title: exit $rc"
    cat "$logs/$name.log"
    [ "$rc" -eq 0 ] || status=1
done
exit "$status"  # every log was printed above; the trap removes them
