#!/usr/bin/env bash
# One machine with one or more NVIDIA GPUs: one process drives every local GPU through the mesh.
#
#   launch/gpu.sh 'configs/ammi.py:dataset=ng20,bits=64' /tmp/ammi_ng64 [--config.x=y ...]
#
# Multi-node GPU: run this on every node with DTR_MULTIHOST=1 and the coordinator variables that
# jax.distributed.initialize() reads (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or under
# SLURM/Open MPI, which it detects by itself.
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,9p' "$0"; exit 2; fi
CONFIG=$1; WORKDIR=$2; shift 2
python3 -c 'import jax; assert jax.default_backend() == "gpu", "install jax[cuda12] first: pip install -U \"jax[cuda12]\""'
exec python3 -m dtr.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
