#!/usr/bin/env bash
# MNIST reproduction runs behind RESULTS.md.  Each run file is rewritten after every epoch,
# and a run already present is resumed, so the script can be stopped and started again.
# Usage: analysis/reproduce_mnist.sh DATA_DIR [EPOCHS_LEE] [EPOCHS_BARTUNOV]
# Then: python analysis/reproduce_tables.py runs --seed 002,004 --found   (the papers' numbers beside these runs)
set -euo pipefail
data=${1:?usage: $0 DATA_DIR [EPOCHS_LEE] [EPOCHS_BARTUNOV]}
lee=${2:-100}
bart=${3:-100}
mkdir -p runs

run() {  # run CIRCUIT RULE EPOCHS OUT
  if [ -f "$4" ]; then
    biotp train --resume "$4" --epochs "$3" --data-dir "$data" --quiet
  else
    biotp train "$1" --algorithm "$2" --epochs "$3" --data-dir "$data" --out "$4" --quiet
  fi
}

for rule in dtp bp; do
  run circuits/dtp_mnist_7x240.yaml "$rule" "$lee" "runs/lee_7x240_${rule}.h5"
done
for rule in dtp sdtp ao_sdtp fa dfa bp; do
  run circuits/bartunov_mnist_fc.yaml "$rule" "$bart" "runs/bartunov_fc_${rule}.h5"
done
