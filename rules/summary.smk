rule summary:
    input:
        [v for c in get_summary_cells() for k, v in c.items() if k not in ("dataset", "encoder", "sid", "sft", "rl")],
        [b[k] for b in get_summary_baselines() for k in ("metrics", "results", "data_stats")],
    output:
        summary=report("results/summary.csv", caption="../report/summary.rst", category="Tables"),
        comparisons=report("results/comparisons.csv", caption="../report/comparisons.rst", category="Tables"),
    params:
        cells=get_summary_cells(),
        baselines=get_summary_baselines(),
    log:
        "results/logs/summary.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/summary.py"


rule plots:
    input:
        summary="results/summary.csv",
        comparisons="results/comparisons.csv",
    output:
        **{
            name: report(f"results/plots/{name}.png", caption=f"../report/{name}.rst", category="Plots")
            for name in PLOTS
        },
    log:
        "results/logs/plots.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/plots.py"
