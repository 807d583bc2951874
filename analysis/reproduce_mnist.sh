#!/usr/bin/env bash
# MNIST reproduction runs behind RESULTS.md (CPU; about an hour on 2 cores).
# Usage: analysis/reproduce_mnist.sh DATA_DIR [EPOCHS_LEE] [EPOCHS_BARTUNOV]
set -euo pipefail
data=${1:?usage: $0 DATA_DIR [EPOCHS_LEE] [EPOCHS_BARTUNOV]}
lee=${2:-40}
bart=${3:-20}
mkdir -p runs
for rule in dtp bp; do
  biotp train circuits/dtp_mnist_7x240.yaml --algorithm "$rule" --epochs "$lee" --data-dir "$data" \
    --out "runs/lee_7x240_${rule}.h5" --quiet
done
for rule in dtp sdtp ao_sdtp fa dfa bp; do
  biotp train circuits/bartunov_mnist_fc.yaml --algorithm "$rule" --epochs "$bart" --data-dir "$data" \
    --out "runs/bartunov_fc_${rule}.h5" --quiet
done
