# Generative recommendation with LLMs: item text -> semantic IDs -> SFT -> RL -> evaluation -> summary.
#   snakemake --cores 2 results/summary.csv          (the default matrix in config.yaml)
#   snakemake --cores 8 --configfile config/office.yaml results/summary.csv
#   snakemake --cores 2 && snakemake --report results/report.html   (everything, plots, then the HTML report)
#   snakemake --cores 2 results/llm/results_summary.csv --configfile config/llm.yaml   (the general LLM track)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/embed.smk"
include: "rules/sid.smk"
include: "rules/sft.smk"
include: "rules/rl.smk"
include: "rules/eval.smk"
include: "rules/baselines.smk"
include: "rules/summary.smk"
include: "rules/llm.smk"


# jobs that only write a small file run on the submitting host under a cluster executor
localrules:
    all,
    rl_none,
    summary,
    plots,
    llm_scale,
    llm_summary,
    llm_plots,


rule all:
    input:
        "results/summary.csv",
        "results/comparisons.csv",
        expand("results/plots/{name}.png", name=PLOTS),
        llm_targets(),
