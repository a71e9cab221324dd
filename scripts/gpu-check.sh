#!/usr/bin/env bash
# The Wan runner on a real GPU, in one command, in under 10 minutes on one H100/H200:
#
#  1. the Python environment and tiny models (scripts/wan-env.sh; cached; the first build
#     needs PyPI) and a look at the GPU (nvidia-smi, torch.cuda);
#  2. the tiny models end to end on CUDA through `pipelet serve` + `pipelet worker
#     --runner wan` (the Rust test t2v_and_i2v_videos_from_the_wan_runner with
#     PIPELET_WAN_TEST_DEVICE=cuda; needs cargo, skipped with a note without it or when
#     building the test binary takes over a quarter of the budget);
#  3. the full-size Wan 2.2 A14B architecture with random weights (no download):
#     4 Lightning steps at 832x480x81 and 1280x720x81, in bf16 then with FP8 weights:
#     seconds per step of each expert, VAE decode, seconds per video, peak GPU memory
#     next to the computed plan; then FlashAttention (if installed), VAE tiling at 720p
#     and torch.compile while the time budget lasts (python -m pipelet_wan.bench).
#
# The table goes to --out (default gpu-check-results.md) and to stdout.
#
#   scripts/gpu-check.sh [--out FILE] [--budget SECONDS] [--dry-run]
#
# --dry-run runs the same plumbing on CPU at tiny sizes (scripts/wan-test.sh does, so the
# script stays working before a GPU is lent); it skips the end-to-end part, which
# wan-test.sh runs on CPU anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=gpu-check-results.md
BUDGET=570  # seconds for the whole script: 10 minutes less a margin
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
    esac
done
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }

echo "==> environment" >&2
. scripts/wan-env.sh
export HF_HUB_OFFLINE=1 PIPELET_WAN_PYTHON="$PY" PIPELET_WAN_TINY_MODELS="$MODELS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

{
    echo "# Wan runner GPU check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} > "$WORK/head.md"

if [ "$DRY" = 1 ]; then
    echo "- mode: --dry-run (CPU, tiny sizes): plumbing only, no GPU figures" >> "$WORK/head.md"
else
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu-check: no CUDA GPU is visible to PyTorch here (nvidia-smi: $(command -v nvidia-smi || echo missing)); run it on a GPU host, or pass --dry-run" >&2
        exit 1
    fi
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)" >> "$WORK/head.md"
fi

# 2. The tiny models end to end on CUDA through the real worker.
E2E="skipped (--dry-run: scripts/wan-test.sh runs it on CPU)"
if [ "$DRY" = 0 ]; then
    if command -v cargo >/dev/null 2>&1; then
        echo "==> tiny models end to end on CUDA (pipelet serve + pipelet worker --runner wan)" >&2
        started=$SECONDS
        # Building the test binary gets at most a quarter of what is left: the full-size
        # figures matter more (build it beforehand to be sure this part runs).
        if ! timeout $(( $(left) / 4 )) cargo test -q -p pipelet --test it --no-run > "$WORK/e2e.log" 2>&1; then
            E2E="skipped: building the test binary took over $(( SECONDS - started )) s (run \`cargo test -p pipelet --test it --no-run\` first)"
        elif PIPELET_WAN_TEST_DEVICE=cuda timeout 240 \
            cargo test -q -p pipelet --test it -- --include-ignored --test-threads=1 \
            wan::t2v_and_i2v_videos_from_the_wan_runner >> "$WORK/e2e.log" 2>&1; then
            E2E="passed in $((SECONDS - started)) s (t2v 512x512 and i2v 640x480, 17 frames, on CUDA)"
        else
            E2E="FAILED after $((SECONDS - started)) s (last lines below)"
            tail -n 15 "$WORK/e2e.log" | sed 's/^/    /' > "$WORK/e2e-tail.md"
        fi
    else
        E2E="skipped: cargo is not installed (the end-to-end part builds pipelet)"
    fi
fi
echo "- tiny models end to end through pipelet worker --runner wan: $E2E" >> "$WORK/head.md"
[ -f "$WORK/e2e-tail.md" ] && cat "$WORK/e2e-tail.md" >> "$WORK/head.md"

# 3. The full-size architecture, random weights.
echo "==> full-size A14B with random weights ($(left) s left)" >&2
BENCH_OK=1
if [ "$DRY" = 1 ]; then
    BENCH=(--tiny --device cpu --sizes 32x32x1,48x32x5 --extras tiled --budget-secs 120)
else
    BENCH=(--device cuda --budget-secs $(( $(left) - 30 )))
fi
if ! (cd runners/wan && timeout $(( $(left) + 60 )) "$PY" -m pipelet_wan.bench --out "$WORK/bench.md" "${BENCH[@]}") > "$WORK/bench.log" 2>&1; then
    BENCH_OK=0
    echo "- full-size benchmark: FAILED (last lines below)" >> "$WORK/head.md"
    tail -n 20 "$WORK/bench.log" | sed 's/^/    /' >> "$WORK/head.md"
fi
{
    cat "$WORK/head.md"
    [ -f "$WORK/bench.md" ] && { echo; cat "$WORK/bench.md"; }
    echo
    echo "Whole script: $((SECONDS - START)) s."
} > "$OUT"
cat "$OUT"
case "$E2E" in FAILED*) exit 1 ;; esac
[ "$BENCH_OK" = 1 ]
