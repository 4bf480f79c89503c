#!/usr/bin/env bash
# Benchmark tables of the bundled models next to the degraded-input baselines, as in their
# model cards (models/*.md). Usage: tools/bench_bundled.sh [BENCH_DIR] (default
# ../shared/data/bench). Builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-../shared/data/bench}
cargo build --release --quiet
pyra=target/release/pyra
out=$(mktemp -d)
run() { "$pyra" bench --data "$bench" --out "$out/$1" "${@:2}" 2>/dev/null | sed -n '/^|/p'; echo; }
echo "## Denoising, PANet protocol (noise clipped to 8 bits, seed 0; RGB PSNR dB / SSIM)"
run noisy --task denoise --sets Kodak24,McMaster --levels 25,50 --model identity
run dn25 --task denoise --sets Kodak24,McMaster --levels 25 --weights pyra-dn25
run dn50 --task denoise --sets Kodak24,McMaster --levels 50 --weights pyra-dn50
echo "## x2 super-resolution (MATLAB bicubic; Y channel, 2-pixel shave; PSNR dB / SSIM)"
run bicubic --task sr --sets Set5,Set14 --levels 2 --model identity
run sr2 --task sr --sets Set5,Set14 --levels 2 --weights pyra-sr2
rm -rf "$out"
