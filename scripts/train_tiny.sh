#!/usr/bin/env bash
# Regenerate vidpress-tiny on one GPU in about 9 minutes (seeded): scripts/train_tiny.sh [OUTPUT] [WORK]
#  1. name the needle object (bare question, 16-32 frames): learns to recognise the 32 objects;
#  2. from that checkpoint, answer the multiple-choice prompt of all five synth tasks with the option's
#     text (64-128 frames); evaluated at 256 frames, the accuracy per task in OUTPUT/training_report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
output=${1:-vidpress/assets/vidpress-tiny}
work=${2:-runs/train-tiny}
python=${PYTHON:-python3}
workers=${WORKERS:-$(( $(nproc) - 2 ))}
"$python" scripts/train_tiny_model.py --output "$work/name" --answer-with name --tasks needle --lengths 16,32 \
  --minutes 1.5 --lr 5e-4 --workers "$workers" --eval-frames 64 --eval-per-task 5
"$python" scripts/train_tiny_model.py --output "$output" --init "$work/name" --answer-with option --lengths 64,96,128 \
  --minutes 6.3 --lr 5e-4 --warmup 100 --workers "$workers" --eval-frames 256 --eval-per-task 30
