#!/usr/bin/env bash
# The GPU checks in one go, for a short loan of one H100/H200 (about 10 minutes):
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]          # default OUT_DIR: output/gpu_checks
#
# 1. the CUDA smoke tests (pytest -m gpu): a tiny training step and generation on
#    the GPU, and the full-size benchmarks cut short;
# 2. bench_train at full size (EVA-ViT-g + Q-Former + LLaMA-7B, random weights, bf16)
#    at the paper's batch 3 and at the largest batch that fits;
# 3. bench_train's LLM variants at 7B: LoRA and FSDP2 full fine-tuning (one GPU);
# 4. bench_generate at full size: the original's way against the batched path.
#
# Each benchmark's JSON line and table land in OUT_DIR/<name>.log. Python packages
# the machine lacks (omegaconf, on the lent H200 image) can travel as wheels in
# .whl/ (see BENCHMARKS.md); they are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-output/gpu_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # fewer false OOMs when probing the largest batch

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" || exit 1

status=0
run() {
    local name=$1
    shift
    echo "==> $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "<== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}

run cuda_tests python3 -m pytest -q -m gpu -p no:cacheprovider \
    tests/models/test_mini_gpt4.py tests/benchmarks/test_benchmarks.py
run bench_train python3 benchmarks/bench_train.py --size full --device cuda --batches 3 max --steps 5
run bench_train_llm python3 benchmarks/bench_train.py --llm-variants lora fsdp --size full \
    --device cuda --llm-batch 4 --seq-len 2048 --steps 3 --warmup 1
run bench_generate python3 benchmarks/bench_generate.py --size full --device cuda --n 32 --batch 32 \
    --max-new-tokens 64
exit $status
