#!/usr/bin/env bash
# Set up and run a local mesh: a router, the HTTP facade and one worker with the
# real model (sentence-transformers/all-MiniLM-L6-v2) on localhost. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/mesh up "$@"
