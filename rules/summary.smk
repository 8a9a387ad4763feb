SUMMARY_CELLS = get_summary_cells()
SUMMARY_BASELINES = get_summary_baselines()


rule summary:
    input:
        [v for c in SUMMARY_CELLS for k, v in c.items() if k not in ("dataset", "encoder", "sid", "sft", "rl")],
        [b[k] for b in SUMMARY_BASELINES for k in ("metrics", "results", "data_stats")],
    output:
        summary=report("results/summary.csv", caption="../report/summary.rst", category="Tables"),
        comparisons=report("results/comparisons.csv", caption="../report/comparisons.rst", category="Tables"),
    log:
        "results/logs/summary.log",
    conda:
        "../envs/genrec.yaml"
    params:
        cells=SUMMARY_CELLS,
        baselines=SUMMARY_BASELINES,
        bootstrap=EVAL.bootstrap,
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
