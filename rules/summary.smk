rule summary:
    input:
        [v for c in get_summary_cells() for k, v in c.items() if k in ("metrics", "results", "sid_stats", "train_log")],
        [b[k] for b in get_summary_baselines() for k in ("metrics", "results")],
    output:
        summary="results/summary.csv",
        comparisons="results/comparisons.csv",
    params:
        cells=get_summary_cells(),
        baselines=get_summary_baselines(),
    log:
        "results/logs/summary.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/summary.py"
