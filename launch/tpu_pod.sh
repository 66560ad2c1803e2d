#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice (big_vision style).
#
#   launch/tpu_pod.sh TPU_NAME ZONE 'configs/ammi.py:dataset=ng20,bits=64' /mnt/shared/ammi_ng64 [--config.x=y ...]
#
# Each host runs the same command; DTR_MULTIHOST=1 makes dtr call jax.distributed.initialize(), builds one
# mesh over all chips and feeds each host batch_size / num_hosts examples of every global batch.
# WORKDIR must be a file system every host sees (an NFS/Filestore mount or GCS FUSE): orbax writes one
# checkpoint from all hosts, and a restarted job resumes from it. DTR_DATA_DIR must hold the data on
# every host (or use data.name=tfds:<name> with a shared TFDS_DATA_DIR).
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,11p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_URL=${DTR_REPO_URL:-https://github.com/your-org/dtr.git}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "
  set -e
  [ -d dtr ] || git clone $REPO_URL dtr
  cd dtr && git pull --ff-only
  python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e .
  DTR_MULTIHOST=1 DTR_DATA_DIR=\${DTR_DATA_DIR:-\$HOME/data} \
    python3 -m dtr.main --config='$CONFIG' --workdir='$WORKDIR' $* --config.progress_bar=False
"
