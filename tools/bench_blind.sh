#!/usr/bin/env bash
# The blind denoiser in training beside FFDNet's real weights and the bundled denoisers, every
# model on the same noisy inputs, both noise protocols, at the sigmas of PANet's Table 1.
# Usage: tools/bench_blind.sh [WEIGHTS] [FFDNET_WEIGHTS] [BENCH_DIR]
#   WEIGHTS         default training/pyra-blind/model_latest.safetensors
#   FFDNET_WEIGHTS  default ../shared/models/ffdnet_weights_rgb.pth (GPL: measured, never bundled)
#   BENCH_DIR       default ../shared/data/bench
# Builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
weights=${1:-training/pyra-blind/model_latest.safetensors}
ffdnet=${2:-../shared/models/ffdnet_weights_rgb.pth}
bench=${3:-../shared/data/bench}
cargo build --release --quiet
pyra=target/release/pyra
out=$(mktemp -d)
for protocol in float clip8; do
    echo "## Denoising, protocol $protocol (seed 0; RGB PSNR dB / SSIM)"
    "$pyra" bench --task denoise --protocol "$protocol" --levels 10,30,50,70 \
        --sets Kodak24,McMaster --data "$bench" --out "$out/$protocol" \
        --weights "$weights" --weights "$ffdnet" --weights bundled 2>/dev/null | sed -n '/^|/p'
    echo
done
rm -rf "$out"
