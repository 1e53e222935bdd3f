#!/usr/bin/env bash
# Creates .venv and installs the pinned CPU stack plus tasb-ray (editable).
# Usage: bash scripts/setup.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# One pip command for the whole pinned set: torch==2.13.0 here keeps pip on the CPU wheel.
"$venv/bin/python" -m pip install -q -r requirements/cpu.txt
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
echo "installed into $venv: activate with 'source $venv/bin/activate'"
