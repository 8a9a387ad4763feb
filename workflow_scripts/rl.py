from genrec.logs import log_to_file
from genrec.rl import run_rl
from genrec.settings import RLSettings

log_to_file(snakemake.log[0])
run_rl(
    RLSettings.from_json(snakemake.params.settings),
    sft_checkpoint=snakemake.input.checkpoint,
    policy_json=snakemake.output.policy,
)
