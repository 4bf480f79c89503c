#!/usr/bin/env bash
# PANet's Table 6 on this machine's budget: twins of the bundled blind denoiser's run
# (configs/pyra-blind.toml) with another middle block, trained with the identical recipe (data,
# seed, schedule) to the step at which the main run keeps a snapshot, then benched beside it.
# Usage: tools/train_ablation.sh [STEP] [BENCH_DIR]
#   STEP       default 3000 (must be one of the recipe's `snapshots`)
#   BENCH_DIR  default ../shared/data/bench
# Each twin goes to training/pyra-blind-<block>/; its CPU time (user + sys, `/usr/bin/time`)
# is written to cpu.txt there. The pyramid-attention row is the main run's
# training/pyra-blind/model_step<STEP>.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-3000}
bench=${2:-../shared/data/bench}
cargo build --release --quiet
pyra=target/release/pyra
main=training/pyra-blind/model_step$step.safetensors
[ -f "$main" ] || { echo "error: $main is missing: train the main run past step $step first" >&2; exit 1; }
for block in none nlb; do
    dir=training/pyra-blind-$block
    if [ ! -f "$dir/model_step$step.safetensors" ]; then
        resume=()
        [ -f "$dir/checkpoint_latest.safetensors" ] && resume=(--resume)
        /usr/bin/time -f "%U %S %e" -o "$dir.time" "$pyra" train --config configs/pyra-blind.toml \
            --set "model.settings.attention=\"$block\"" --set "output.dir=\"$dir\"" \
            --until "$step" "${resume[@]}"
        read -r user sys wall < "$dir.time"
        echo "leg to step $step: user $user s, sys $sys s, wall $wall s" >> "$dir/cpu.txt"
        rm "$dir.time"
    fi
done
out=$(mktemp -d)
"$pyra" bench --task denoise --protocol float --levels 10,30,50,70 --sets Kodak24,McMaster \
    --data "$bench" --out "$out" --attention-window 48 --weights "$main" \
    --weights "training/pyra-blind-nlb/model_step$step.safetensors" \
    --weights "training/pyra-blind-none/model_step$step.safetensors" 2>/dev/null | sed -n '/^|/p'
rm -rf "$out"
