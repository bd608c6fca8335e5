#!/usr/bin/env bash
# Runs the MNIST-1D study's sweeps one after another; each resumes where it stopped.
#   sweeps/mnist1d/run.sh a-default g-stable-ce-input-lr-1
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for g in "$@"; do
  milr sweep "sweeps/mnist1d/$g.yaml" --out "sweeps/mnist1d/$g.csv" \
    --trials "sweeps/mnist1d/$g.trials.jsonl"
done
