#!/usr/bin/env bash
# Runs the budget study's sweeps one after another; each resumes where it stopped.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for g in "$@"; do
  milr sweep "sweeps/budget/$g.yaml" --out "sweeps/budget/$g.csv" --trials "sweeps/budget/$g.trials.jsonl"
done
