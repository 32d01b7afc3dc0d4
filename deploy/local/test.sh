#!/usr/bin/env bash
# Set up and run the checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && apt-get install -y -q etcd-server
  else
    echo "etcd is missing: install Debian's etcd-server (sudo apt-get install etcd-server)" >&2
    exit 1
  fi
fi
bash deploy/local/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== buf lint / format / breaking"
.venv/bin/buf lint
.venv/bin/buf format --diff --exit-code
.venv/bin/buf breaking --against protos/baseline.binpb

echo "== ruff"
.venv/bin/ruff check mesh worker_agent http_facade tests bench protos/generate.py
.venv/bin/ruff format --check mesh worker_agent http_facade tests bench protos/generate.py

echo "== tests"
exec .venv/bin/python -m pytest -q "$@"
