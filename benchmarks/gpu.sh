#!/usr/bin/env bash
# The fast-path and settling benchmarks on a CUDA machine, in one go (meant to take under
# 10 minutes): the same tables as on the CPU, with the torch parts on the GPU.  Run from the
# repository root after installing (pip install -e .); --data-dir points at MNIST.
#   bash benchmarks/gpu.sh [DATA_DIR]
set -euo pipefail
data=${1:-${BIOTP_DATA:-$HOME/.biotp/data}}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run the CPU benchmarks instead')"
python -c "import torch; print('device:', torch.cuda.get_device_name(0))"
# fast path: every TP rule against BP (biotp's and plain PyTorch's) on the GPU: seconds per epoch
# (1 and 2 host threads), peak GPU memory at batch 100 and 1000, DTP/BP by depth and width, and
# the `summary:` line; --quick = 5000 examples, one timed epoch (a few minutes)
python benchmarks/fastpath.py --device cuda --data-dir "$data" --quick --rules bp,tp,dtp,sdtp,ao_sdtp,dtp_gn
# settling: throughput, epoch cost per solver, scale table, summary line
python benchmarks/settling.py --device cuda --data-dir "$data" --examples 4096 --small 4 --epoch-examples 5000 --quick
