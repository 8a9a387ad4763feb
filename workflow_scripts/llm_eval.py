from genrec.llm.generate import evaluate_chat
from genrec.logs import log_to_file
from genrec.settings import LLMEvalSettings

log_to_file(snakemake.log[0])
s = LLMEvalSettings.from_json(snakemake.params.settings)
evaluate_chat(
    snakemake.input.checkpoint,
    snakemake.input.test,
    metrics_json=snakemake.output.metrics,
    answers_json=snakemake.output.answers,
    max_new_tokens=s.max_new_tokens,
    batch_size=s.batch_size,
    max_prompt_length=s.max_prompt_length,
    threads=snakemake.threads,
    max_examples=s.max_test_samples,
    n_boot=s.bootstrap_samples,
    train_log=snakemake.input.train_log,
)
