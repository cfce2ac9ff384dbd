#!/usr/bin/env bash
# Create .venv and install defr with its test dependencies (CPU; torch from PyPI or a local wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q --no-compile -e ".[dev,nncf]"  # nncf: tested in CI (tests/test_nncf.py)
echo "defr installed in .venv"
