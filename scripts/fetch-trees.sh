#!/usr/bin/env bash
# Fetch the TensorRT-LLM source trees a build needs, at exactly one release tag, into DEST:
#
#   DEST/TensorRT-LLM/          examples/ (convert/quantize scripts, run.py), triton_backend/ (>= 0.20),
#                               tensorrt_llm/version.py, requirements.txt; nothing else (no cpp/, no LFS blobs)
#   DEST/tensorrtllm_backend/   the Triton templates (all_models/inflight_batcher_llm/..., tools/fill_template.py):
#                               a link to TensorRT-LLM/triton_backend from 0.20 on, a checkout of
#                               triton-inference-server/tensorrtllm_backend at the same tag before
#
# Usage: scripts/fetch-trees.sh [--repo URL] [--backend-repo URL] [--version X.Y.Z] [--force] [DEST]
#   --repo          TensorRT-LLM repository (default: upstream on GitHub; file:// URLs work)
#   --backend-repo  tensorrtllm_backend repository, used only for releases before 0.20
#   --version       release to fetch (default: the image's pinned release, DEFAULT_VERSION below)
#   --force         replace trees of another release found in DEST (never anything else)
#   DEST            default: the project root (where the tool, the Dockerfile and cog look for the trees)
#
# Idempotent: trees already at the requested release are verified and kept. Fails loudly, naming the
# release, when the tag or a path the tool needs is missing. The Dockerfile runs this script; for
# `cog build` run it first (cog's build steps cannot see the project's files: the trees are copied
# into the image with the source, as cog-trt-llm's TensorRT-LLM submodule was).
set -euo pipefail

DEFAULT_VERSION=1.2.1   # keep in step with trtllm_builder/plan/versions.py DEFAULT_TRTLLM_VERSION (a test checks)
repo=https://github.com/NVIDIA/TensorRT-LLM.git
backend_repo=https://github.com/triton-inference-server/tensorrtllm_backend.git
version=$DEFAULT_VERSION
force=0
dest=

die() { echo "fetch-trees: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --repo) repo=${2:?--repo needs a URL}; shift 2 ;;
        --backend-repo) backend_repo=${2:?--backend-repo needs a URL}; shift 2 ;;
        --version) version=${2:?--version needs X.Y.Z}; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$dest" ] || die "more than one DEST given"; dest=$1; shift ;;
    esac
done
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([a-z0-9.]*)$ ]] || die "--version must look like 1.2.1, got '$version'"
if [ -z "$dest" ]; then
    dest=$(cd "$(dirname "$0")/.." && pwd)
fi
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
tag=v$version
trt=$dest/TensorRT-LLM
backend=$dest/tensorrtllm_backend

# Releases before 0.20 keep the Triton templates in their own repository.
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
in_tree_backend=1
if [ "$major" -eq 0 ] && [ "$minor" -lt 20 ]; then in_tree_backend=0; fi

tree_version() {  # the __version__ string of a TensorRT-LLM checkout, or nothing
    [ -f "$1/tensorrt_llm/version.py" ] || return 0
    sed -n 's/^__version__ *= *["'"'"']\([^"'"'"']*\)["'"'"'].*/\1/p' "$1/tensorrt_llm/version.py" | head -n 1
}

# sparse_clone URL TAG DIR PATTERN...: a shallow, blob-less, non-cone sparse checkout of exactly TAG.
sparse_clone() {
    local url=$1 ref=$2 dir=$3; shift 3
    local tmp
    tmp=$(mktemp -d "$(dirname "$dir")/.fetch-trees.XXXXXX")
    # Non-cone patterns: cone mode (what `clone --sparse` starts) refuses file paths such as
    # tensorrt_llm/version.py ("is not a directory"). LFS content is never smudged.
    if ! GIT_LFS_SKIP_SMUDGE=1 git clone --quiet --depth 1 --filter=blob:none --no-checkout \
            --branch "$ref" "$url" "$tmp/repo" 2>"$tmp/err"; then
        sed 's/^/  git: /' "$tmp/err" >&2
        rm -rf "$tmp"
        die "cannot clone tag $ref of $url: is $ref a release of that repository? (see its tags)"
    fi
    git -C "$tmp/repo" sparse-checkout set --no-cone "$@"
    GIT_LFS_SKIP_SMUDGE=1 git -C "$tmp/repo" checkout --quiet "$ref" 2>"$tmp/err" || {
        sed 's/^/  git: /' "$tmp/err" >&2; rm -rf "$tmp"; die "cannot check out $ref of $url"; }
    rm -rf "$dir"
    mv "$tmp/repo" "$dir"
    rm -rf "$tmp"
}

need() {  # need DIR PATH WHAT: fail naming the release when a path the tool needs is missing
    [ -e "$1/$2" ] || die "$3 at $tag has no $2 (looked in $1); the tool needs it: is $version a release with the convert_checkpoint.py + trtllm-build engine path?"
}

# --- TensorRT-LLM ---------------------------------------------------------------------------------
if [ -d "$trt" ]; then
    have=$(tree_version "$trt")
    if [ "$have" = "$version" ]; then
        echo "fetch-trees: $trt is already TensorRT-LLM $version; verifying it"
    elif [ -z "$have" ] || [ ! -d "$trt/.git" ]; then
        die "$trt exists but is not a TensorRT-LLM checkout made by this script (no .git or tensorrt_llm/version.py); it is left alone: move it away and run again"
    elif [ "$force" = 1 ]; then
        echo "fetch-trees: replacing TensorRT-LLM $have in $trt with $version"
        rm -rf "$trt"
    else
        die "$trt holds TensorRT-LLM $have, not $version: remove it, or pass --force to replace it"
    fi
fi
if [ ! -d "$trt" ]; then
    echo "fetch-trees: TensorRT-LLM $tag from $repo -> $trt (examples, triton_backend, version.py only)"
    sparse_clone "$repo" "$tag" "$trt" \
        '/examples/' '/triton_backend/' '/tensorrt_llm/version.py' '/requirements.txt' '/LICENSE'
fi
need "$trt" tensorrt_llm/version.py "TensorRT-LLM"
have=$(tree_version "$trt")
[ "$have" = "$version" ] || die "TensorRT-LLM at $tag says it is version '${have:-?}' in tensorrt_llm/version.py, not $version"
need "$trt" examples/run.py "TensorRT-LLM"
need "$trt" examples/quantization/quantize.py "TensorRT-LLM"
if [ "$major" -gt 0 ] || [ "$minor" -ge 18 ]; then
    need "$trt" examples/models/core "TensorRT-LLM"
fi
[ ! -e "$trt/cpp" ] || die "$trt has a cpp/ folder: it is not a sparse checkout made by this script; remove it and run again"

# --- Triton templates -----------------------------------------------------------------------------
if [ "$in_tree_backend" = 1 ]; then
    need "$trt" triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt "TensorRT-LLM"
    need "$trt" triton_backend/tools/fill_template.py "TensorRT-LLM"
    if [ -L "$backend" ] || [ ! -e "$backend" ]; then
        ln -sfn TensorRT-LLM/triton_backend "$backend"
    elif [ "$force" = 1 ]; then
        rm -rf "$backend" && ln -s TensorRT-LLM/triton_backend "$backend"
    else
        die "$backend exists and is not the link to TensorRT-LLM/triton_backend that $version uses: remove it, or pass --force"
    fi
else
    if [ -L "$backend" ]; then rm -f "$backend"; fi
    if [ -d "$backend" ] && [ "$(cat "$backend/.trtllm-builder-tag" 2>/dev/null)" != "$tag" ]; then
        [ "$force" = 1 ] || die "$backend is not tensorrtllm_backend $tag: remove it, or pass --force to replace it"
        rm -rf "$backend"
    fi
    if [ ! -d "$backend" ]; then
        echo "fetch-trees: tensorrtllm_backend $tag from $backend_repo -> $backend (all_models, tools only)"
        sparse_clone "$backend_repo" "$tag" "$backend" '/all_models/' '/tools/' '/LICENSE'
        echo "$tag" > "$backend/.trtllm-builder-tag"
    fi
    need "$backend" all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt "tensorrtllm_backend"
    need "$backend" tools/fill_template.py "tensorrtllm_backend"
fi

commit=$(git -C "$trt" rev-parse HEAD 2>/dev/null || echo unknown)
echo "fetch-trees: ok: TensorRT-LLM $version ($commit) in $trt; Triton templates in $backend"
