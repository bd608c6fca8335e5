#!/usr/bin/env bash
# Runs the edge study's sweeps one after another; each resumes where it stopped.
#   sweeps/edge/run.sh a-default
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for g in "$@"; do
  milr sweep "sweeps/edge/$g.yaml" --out "sweeps/edge/$g.csv" --trials "sweeps/edge/$g.trials.jsonl"
done
