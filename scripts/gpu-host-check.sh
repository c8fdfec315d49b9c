#!/usr/bin/env bash
# The project on a GPU host without TensorRT-LLM (no Docker needed): the host's own Python 3.12, real
# nvidia-smi, real OpenMPI mpirun and whatever huggingface_hub it has, against the stand-in 1.2.1 tree.
#
#   bash scripts/gpu-host-check.sh [--wheels DIR] [--templates DIR ...]
#
#   --wheels DIR      wheels of the packages the host lacks (pydantic, boto3, moto, cog, tritonclient,
#                     ...: `pip download` them for the host's Python on a machine with an index), installed
#                     into a scratch dir on PYTHONPATH; without it the host's own packages are used
#   --templates DIR   a checkout of real Triton templates (all_models/inflight_batcher_llm/, e.g.
#                     tensorrtllm_backend at v0.19.0, with inflight_batcher_llm/standin_backend.py copied
#                     from tests/standin/backend/ for the C++ reads): repositories built from each and
#                     loaded by tests/tritonload.py (may be repeated; skipped when not given)
#
# Runs: GPU detection, a one-GPU build with a smoke test, a tp 2 build whose smoke test runs under the real
# `mpirun -n 2` (the GPU count faked through the stand-in nvidia-smi where the host has fewer GPUs), the
# Triton check, and the suite in 4 concurrent shards. Logs go to $OUT (default: a temp dir).
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT" || exit 1
wheels=
templates=()
while [ $# -gt 0 ]; do
    case $1 in
        --wheels) wheels=$2; shift 2 ;;
        --templates) templates+=("$2"); shift 2 ;;
        *) echo "usage: $0 [--wheels DIR] [--templates DIR ...]" >&2; exit 2 ;;
    esac
done
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-host-site "$wheels"/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu-host-site:$ROOT
else
    export PYTHONPATH=$ROOT
fi
echo "logs in $OUT"
echo "== host"
python3 -c 'import sys, huggingface_hub, pydantic, transformers, google.protobuf as pb; print(sys.version.split()[0], "huggingface_hub", huggingface_hub.__version__, "pydantic", pydantic.VERSION, "transformers", transformers.__version__, "protobuf", pb.__version__)'
nvidia-smi --query-gpu=index,name,compute_cap,memory.total --format=csv,noheader,nounits
mpirun --version | head -1
python3 -c 'from trtllm_builder.plan.gpu import detect_gpus; print("detect_gpus:", detect_gpus())'

W=/tmp/gpuw; rm -rf $W; mkdir -p $W/fake
python3 - <<'PY'
import sys; sys.path.insert(0, "tests")
from modelgen import make_tiny_model
make_tiny_model("/tmp/gpuw/llama", "llama")
PY
TREE=$ROOT/tests/standin/trees/1.2.1
export TRTLLM_DIR=$TREE/TensorRT-LLM TRTLLM_BUILDER_CACHE=$W/cache
# what the stand-in trtllm-build reports building on: the host's first GPU, as name:compute_cap:MiB
first=$(nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits | head -1 | sed 's/, /:/g')
export STANDIN_GPUS="$first"
cat > $W/one.yaml <<Y
model: {id: $W/llama}
trtllm: {example: llama, version: "1.2.1"}
steps:
  - {name: convert, script: convert_checkpoint.py, args: {dtype: bfloat16}}
  - {name: build, command: trtllm-build, args: {max_batch_size: 4, max_seq_len: 256}}
smoke_test: {prompt: "Hello", max_output_len: 8}
Y
echo "== 1. one-GPU build: real nvidia-smi (the stand-in trtllm-build/run.py in their 1.2.1 tree)"
PATH=$TREE/bin:$PATH python3 -m trtllm_builder build $W/one.yaml -o $W/one.tar.gz > $OUT/one.log 2>&1; echo "rc=$?"
tail -5 $OUT/one.log
PATH=$TREE/bin:$PATH python3 -m trtllm_builder inspect $W/one.tar.gz | tee $OUT/one-inspect.txt
python3 -c "import json,tarfile; t=tarfile.open('$W/one.tar.gz'); m=json.load(t.extractfile('manifest.json')); print('manifest gpus', m['gpus'], 'serving', m['serving']['tritonserver'][:2], 'smoke', m['smoke_test']['output'])"

echo "== 2. tp 2 build, smoke test over 2 ranks under the REAL mpirun (two GPUs of the host's first kind, through the stand-in nvidia-smi)"
ln -s $ROOT/tests/standin/bin/nvidia-smi $W/fake/nvidia-smi
export STANDIN_GPUS="$first,$first"
sed 's/dtype: bfloat16}/dtype: bfloat16, tp_size: 2}/' $W/one.yaml > $W/two.yaml
PATH=$TREE/bin:$W/fake:$PATH python3 -m trtllm_builder build $W/two.yaml -o $W/two.tar.gz > $OUT/two.log 2>&1; echo "rc=$?"
grep -E "smoke test|mpirun|Output \[|rank" $OUT/two.log | head -12
which mpirun

echo "== 3. Triton repositories from the given templates (tp 2; decoupled off/on), loaded by tests/tritonload.py (the BLS model imports torch)"
if [ ${#templates[@]} -eq 0 ]; then
    echo "skipped: no --templates given"
else
python3 - <<'PY'
import json, sys
sys.path.insert(0, "tests")
from pathlib import Path
from modelgen import make_tiny_model
m = make_tiny_model(Path("/tmp/gpuw/tri-model"), "llama")
p = m / "tokenizer_config.json"; c = json.loads(p.read_text()); c.pop("tokenizer_class", None); p.write_text(json.dumps(c))
PY
args=()
for tdir in ${templates[@]+"${templates[@]}"}; do for dec in false true; do
  tag=$(basename "$tdir"); n=$tag-$dec
  printf 'model: {id: /tmp/gpuw/tri-model}\ntrtllm: {example: llama}\nsteps:\n  - {name: convert, script: convert_checkpoint.py, args: {dtype: bfloat16, tp_size: 2}}\n  - {name: build, command: trtllm-build, args: {max_batch_size: 8, max_seq_len: 512}}\noutput: {format: triton, name: %s.tar.gz, triton: {decoupled: %s}}\n' $n $dec > $W/$n.yaml
  PATH=$TREE/bin:$W/fake:$PATH TRTLLM_BACKEND_DIR=$tdir python3 -m trtllm_builder build $W/$n.yaml -o $W/$n.tar.gz > $OUT/$n.log 2>&1; echo "build $n: rc=$?"
  mkdir -p $W/x/$n && tar -xzf $W/$n.tar.gz -C $W/x/$n
  args+=("$(dirname $(find $W/x/$n -name ensemble -type d | head -1))=$tdir")
done; done
python3 tests/tritonload.py "${args[@]}" --mount /models > $OUT/load.json 2> $OUT/load.err; echo "tritonload rc=$?"
python3 -c "
import json; r=json.load(open('$OUT/load.json'))
for k,v in r.items(): print(k.split('/x/')[1].split('/')[0], 'loaded', sorted(v['loaded']), 'failed', v['failed'])"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
fi

echo "== 4. the suite in 4 concurrent shards (the host's Python and packages)"
unset TRTLLM_DIR TRTLLM_BUILDER_CACHE STANDIN_GPUS
cd $ROOT
files=$(ls tests/test_*.py | grep -v test_gpu_image.py)
pids=()
for k in 0 1 2 3; do
  shard=$(echo "$files" | awk -v k=$k 'NR % 4 == k')
  timeout 480 python3 -m pytest -q -p no:cacheprovider --timeout 300 --basetemp=/tmp/pt$k $shard > $OUT/suite$k.log 2>&1 &
  pids+=($!)
done
for k in 0 1 2 3; do wait ${pids[$k]}; echo "shard $k rc=$? $(tail -1 $OUT/suite$k.log)"; done
grep -h "^FAILED\|^ERROR" $OUT/suite*.log | head -20
