#!/usr/bin/env bash
# Runs the optimizer study's sweeps one after another; each resumes where it stopped.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for g in "$@"; do
  milr sweep "sweeps/optimizers/$g.yaml" --out "sweeps/optimizers/$g.csv" \
    --trials "sweeps/optimizers/$g.trials.jsonl"
done
