#!/usr/bin/env bash
# Runs a study's sweeps one after another, each resuming where it stopped:
#   sweeps/run.sh STUDY GRID...    e.g. sweeps/run.sh mnist1d a-default g-stable-ce-input-lr-1
# writes sweeps/STUDY/GRID.csv and its trials log sweeps/STUDY/GRID.trials.jsonl.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
study=$1
shift
for g in "$@"; do
  milr sweep "sweeps/$study/$g.yaml" --out "sweeps/$study/$g.csv" \
    --trials "sweeps/$study/$g.trials.jsonl"
done
