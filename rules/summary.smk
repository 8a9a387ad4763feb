def get_summary_cells():
    return [
        {
            "dataset": c.dataset,
            "encoder": c.encoder,
            "sid": c.sid,
            "sft": c.sft,
            "rl": c.rl,
            "metrics": f"{c.run_dir}/metrics.json",
            "sid_stats": f"results/{c.dataset}/sid/{c.encoder}/{c.sid}/sid_stats.json",
            "train_log": f"results/{c.dataset}/runs/{c.encoder}-{c.sid}/sft-{c.sft}/train_log.json",
        }
        for c in CELLS
    ]


def get_summary_baselines():
    return [
        {"dataset": d, "baseline": b, "metrics": f"results/{d}/baselines/{b}/metrics.json"}
        for d in DATASETS
        for b in BASELINES
    ]


rule summary:
    input:
        [v for c in get_summary_cells() for k, v in c.items() if k in ("metrics", "sid_stats", "train_log")],
        [b["metrics"] for b in get_summary_baselines()],
    output:
        "results/summary.csv",
    params:
        cells=get_summary_cells(),
        baselines=get_summary_baselines(),
    log:
        "results/logs/summary.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/summary.py"
