#!/usr/bin/env bash
# XrayGPT quickstart: the embedded default, end to end on a CPU.
#
#   bash quickstart.sh
#
# 1. creates .venv and installs requirements.txt (skipped when already done);
# 2. generates the phantom data set in dataset/phantom (skipped when present):
#    SYNTHETIC chest-radiograph-like drawings with known findings, not real images;
# 3. trains the tiny model in four stages, like XrayGPT's recipe in miniature:
#    encoder pretraining (train_configs/xraygpt_tiny_stage1.yaml), LLM fine-tuning on
#    text conversations that open with the report (stage2), alignment (stage3), and
#    image-grounded conversations (stage4); a finished stage is skipped, a killed one
#    resumes;
#    Each stage's training curves go to <stage folder>/training_curves.png;
# 4. evaluates on the phantom test split with xraygpt evaluate (test.py; metrics with 95 % bootstrap
#    intervals and the baseline row; metrics.png beside metrics.json), then prints
#    the per-finding table and the alignment loss against the text-only floor; then
#    the chat evaluation (yes/no questions through the demo's Chat, first and as a
#    follow-up after a report; chat_metrics.json beside metrics.json) and its table.
#
# Environment: PYTHON (interpreter for the venv, default python3), XRAYGPT_OUTPUT
# (output folder, default output), XRAYGPT_PHANTOM (data folder, default dataset/phantom),
# XRAYGPT_THREADS (torch threads, default: cores - 1, at most 4).
# The tiny model has no clinical meaning: see README.md (Weights, Data).
set -euo pipefail
cd "$(dirname "$0")"

OUT=${XRAYGPT_OUTPUT:-output}
DATA=${XRAYGPT_PHANTOM:-dataset/phantom}
PY=.venv/bin/python
XG=.venv/bin/xraygpt  # the project's command (pip install -e ., in requirements.txt)

step() { printf '\n==> %s\n' "$*"; }

# --- 1. environment ------------------------------------------------------------
if [ ! -x "$PY" ]; then
    step "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$("$PY" -c "import hashlib; print(hashlib.sha256(open('requirements.txt', 'rb').read()).hexdigest())")
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing requirements.txt into .venv"
    "$PY" -m pip install -q -r requirements.txt
    echo "$want" >"$stamp"
else
    echo "requirements already installed in .venv (delete $stamp to reinstall)"
fi

# One compute thread per spare core: on a 2-core machine the data loader worker
# takes the other, and oversubscribed OpenMP threads slow small models badly.
cores=$(nproc 2>/dev/null || echo 2)
threads=$((cores > 1 ? cores - 1 : 1))
export OMP_NUM_THREADS=${XRAYGPT_THREADS:-$((threads > 4 ? 4 : threads))}

start=$(date +%s)
timings=()

# --- 2. data -----------------------------------------------------------------------
if [ -f "$DATA/filter_cap.json" ] && [ -f "$DATA/tokenizer/tokenizer.json" ] \
    && [ -f "$DATA/conversations/train.json" ]; then
    echo "phantom data present in $DATA (delete the folder to regenerate)"
else
    step "generating the phantom data set in $DATA"
    t0=$(date +%s)
    "$XG" phantom --out "$DATA" --n 3000 --seed 0
    timings+=("data $(($(date +%s) - t0)) s")
fi

# --- 3. training -------------------------------------------------------------------
train_start=$(date +%s)
data_opts=("datasets.phantom.build_info.storage=$DATA" "run.output_dir=$OUT")
tok_opt="model.tokenizer=$DATA/tokenizer"
ckpt1="$OUT/xraygpt_tiny_stage1/checkpoint_last.pth"
ckpt2="$OUT/xraygpt_tiny_stage2/checkpoint_last.pth"
ckpt3="$OUT/xraygpt_tiny_stage3/checkpoint_last.pth"
ckpt4="$OUT/xraygpt_tiny_stage4/checkpoint_last.pth"

phantom_opt="datasets.phantom.build_info.storage=$DATA"
conv_opt="datasets.phantom_conversations.build_info.storage=$DATA"
run_stage() {  # name, extra options...
    local name=$1
    shift
    step "training $name"
    local t0
    t0=$(date +%s)
    "$XG" train --cfg-path "train_configs/xraygpt_tiny_$name.yaml" \
        --options "run.output_dir=$OUT" run.resume=auto "$@"
    timings+=("$name $(($(date +%s) - t0)) s")
}
run_stage stage1 "$phantom_opt"
run_stage stage2 "$tok_opt" "$conv_opt"
run_stage stage3 "$phantom_opt" "$tok_opt" "model.ckpt=[$ckpt1,$ckpt2]"
run_stage stage4 "$tok_opt" "$conv_opt" "model.ckpt=[$ckpt1,$ckpt2,$ckpt3]"
train_end=$(date +%s)
step "training curves (loss, lr, throughput)"
"$XG" plot-run "$OUT/xraygpt_tiny_stage1" "$OUT/xraygpt_tiny_stage2" \
    "$OUT/xraygpt_tiny_stage3" "$OUT/xraygpt_tiny_stage4"

# --- 4. evaluation -----------------------------------------------------------------
step "evaluating on the phantom test split"
t0=$(date +%s)
"$XG" evaluate --cfg-path eval_configs/xraygpt_tiny_eval.yaml \
    --options "${data_opts[@]}" "$tok_opt" "model.ckpt=[$ckpt1,$ckpt2,$ckpt3,$ckpt4]"
timings+=("eval $(($(date +%s) - t0)) s")

step "chat evaluation on the phantom test split (held-out phrasings)"
t0=$(date +%s)
"$XG" chat-eval --cfg-path eval_configs/xraygpt_tiny_eval.yaml \
    --options "${data_opts[@]}" "$tok_opt" "model.ckpt=[$ckpt1,$ckpt2,$ckpt3,$ckpt4]"
timings+=("chat-eval $(($(date +%s) - t0)) s")

step "summary"
"$XG" recipe-summary --output "$OUT" --data "$DATA"
echo
echo "wall time: ${timings[*]}; all training stages $((train_end - train_start)) s; everything after the install $(($(date +%s) - start)) s"
echo "chat with the tiny model: .venv/bin/xraygpt demo --cfg-path eval_configs/xraygpt_tiny_eval.yaml --device cpu"
