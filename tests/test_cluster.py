"""The scheduling check's parsing and matching (the real sinfo and dry run are in tests/test_slurm.py)."""

from genrec.cluster import Request, parse_dry_run, parse_sinfo, unschedulable

SINFO = """a100-1|gpu|64|512000|gpu:a100:8(S:0-1)
a100-2|gpu|64|512000|gpu:a100:4,gpu:v100:2
cpu-1|cpu*|128|1024000|(null)
"""


def test_sinfo_gres_forms():
    nodes = parse_sinfo(SINFO)
    assert [n.gpus for n in nodes] == [{"a100": 8}, {"a100": 4, "v100": 2}, {}]
    assert [n.default for n in nodes] == [False, False, True] and nodes[2].partition == "cpu"


def test_each_short_resource_is_named_with_the_best_node():
    nodes = parse_sinfo(SINFO)
    problems = unschedulable(
        [
            Request("sft", 96, 600000, 9, "a100", "gpu"),  # CPUs, memory and GPUs all too many
            Request("evaluate", 8, 32000, 1, "h100", "gpu"),  # no H100 anywhere
            Request("prepare_data", 1, 8000, 0, "", ""),  # the default partition: fits
            Request("embed_items", 4, 8000, 0, "", "bigmem"),  # no such partition
        ],
        nodes,
    )
    assert problems[0].startswith("rule sft asks for 96 CPUs in partition gpu; its nodes have at most 64")
    assert "rule sft asks for 600000 MB of memory" in problems[1] and "at most 512000" in problems[1]
    assert "rule sft asks for 9 a100 GPUs" in problems[2] and "at most 8 (a100-1)" in problems[2]
    assert "rule evaluate asks for 1 h100 GPUs" in problems[3]
    assert "rule embed_items asks for partition 'bigmem'" in problems[4]
    assert len(problems) == 5


def test_a_request_must_fit_one_node_as_a_whole():
    nodes = parse_sinfo("n1|gpu|64|100000|gpu:a100:1\nn2|gpu|8|500000|gpu:a100:8")
    (problem,) = unschedulable([Request("sft", 32, 200000, 2, "a100", "gpu")], nodes)
    assert "no single node has all of them" in problem


def test_dry_run_blocks_keep_each_distinct_request_once():
    out = "rule a:\n    threads: 2\n    resources: mem_mb=10\nrule a:\n    threads: 2\n    resources: mem_mb=10\n"
    assert parse_dry_run(out) == [Request("a", 2, 10, 0, "", "")]
