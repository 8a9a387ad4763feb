from genrec.llm.data import prepare_llm_data
from genrec.logs import log_to_file
from genrec.settings import LLMDataSettings

log_to_file(snakemake.log[0])
prepare_llm_data(
    LLMDataSettings.from_json(snakemake.params.settings),
    item_json=snakemake.input.get("item_json"),
    train_out=snakemake.output.train,
    valid_out=snakemake.output.valid,
    test_out=snakemake.output.test,
    stats_json=snakemake.output.stats,
)
