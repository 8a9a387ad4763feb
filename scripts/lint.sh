#!/usr/bin/env bash
# Lint everything CI lints: ruff (check and format) on the Python code, snakefmt on the rules, and
# `snakemake --lint` on the default config and on every config in config/ (merged over it, as
# --configfile does). Run after scripts/setup.sh; exits non-zero on the first finding.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${GENREC_VENV:-.venv}/bin
"$bin/ruff" check src tests bench workflow_scripts
"$bin/ruff" format --check src tests bench workflow_scripts
"$bin/snakefmt" --check Snakefile rules
for cfg in "" config/*.yaml; do
    out=$("$bin/python" -m snakemake --lint ${cfg:+--configfile "$cfg"} 2>&1) || { echo "$out"; exit 1; }
    if ! grep -q "Congratulations, your workflow is in a good condition" <<<"$out"; then
        echo "snakemake --lint ${cfg:-config.yaml}:"; echo "$out"; exit 1
    fi
    echo "snakemake --lint ${cfg:-config.yaml}: clean"
done
