import json

import pytest

from genrec.llm.data import catalogue_qa, nested_scales, read_instructions, split_examples

ALPACA = [
    {"instruction": "What is 2 + 2?", "output": "4"},
    {"instruction": "Translate to French", "input": "cat", "output": "chat"},
]
CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello"}]}  # fmt: skip


def test_the_three_shapes_read_as_chats_ending_in_the_answer(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ALPACA))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [*ALPACA, CHAT]) + "\n\n")
    from datasets import Dataset

    Dataset.from_list([{"input": "", **ALPACA[0]}, ALPACA[1]]).save_to_disk(str(tmp_path / "ds"))  # one schema
    expected = [
        [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Translate to French\n\ncat"}, {"role": "assistant", "content": "chat"}],
    ]
    assert read_instructions(tmp_path / "a.json") == expected
    assert read_instructions(tmp_path / "b.jsonl") == [*expected, CHAT["messages"]]
    assert read_instructions(tmp_path / "ds") == expected


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": "q", "output": "a"}\n{"instruction": "q"}\n', r"b.jsonl line 2: .*missing .*\['output'\]"),
        ('{"instruction": "q", "output": "a"}\nnot json\n', "b.jsonl line 2: not JSON"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]}\n', "line 1: the last"),
        ('{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}\n', r"messages\[0\]"),
        ('{"instruction": "q", "output": "  "}\n', "line 1: empty instruction or output"),
        ("\n", "holds no records"),
    ],
)
def test_bad_records_are_named(tmp_path, content, message):
    (tmp_path / "b.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_instructions(tmp_path / "b.jsonl")


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_instructions(tmp_path / "missing.json")
    (tmp_path / "o.json").write_text('{"instruction": "q"}')
    with pytest.raises(ValueError, match="o.json: a JSON instruction file holds an array"):
        read_instructions(tmp_path / "o.json")
    (tmp_path / "r.json").write_text(json.dumps([ALPACA[0], 3]))
    with pytest.raises(ValueError, match="r.json record 1: a record must be an object"):
        read_instructions(tmp_path / "r.json")


def test_catalogue_qa_from_office_items(office_dir):
    office_items = json.loads((office_dir / "item.json").read_text())
    qa = catalogue_qa(office_items)
    assert len(qa) > 6000  # enough for three data scales and a test split
    assert catalogue_qa(office_items) == qa  # deterministic
    assert all(c[-1]["role"] == "assistant" and c[-1]["content"].strip() for c in qa)
    assert not any("<" in c[-1]["content"] or "[" in c[-1]["content"] for c in qa)  # markup and list brackets gone


def test_split_never_shares_a_prompt_and_scales_nest():
    chats = [
        [{"role": "user", "content": f"q{i % 300}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(400)
    ]
    train, test = split_examples(chats, 0.25, seed=1)
    assert len(test) >= 100 and len(train) + len(test) == 400
    assert not {c[0]["content"] for c in train} & {c[0]["content"] for c in test}  # q0..q99 twice: one side only
    assert split_examples(chats, 0.25, seed=1) == (train, test) and split_examples(chats, 0.25, seed=2) != (train, test)
    scales = nested_scales(train, [50, 0.5, 1.0], seed=0)
    sizes = sorted(scales, key=int)
    assert [int(s) for s in sizes] == [50, round(len(train) / 2), len(train)]
    for small, large in zip(sizes, sizes[1:]):
        assert scales[large][: int(small)] == scales[small]
    with pytest.raises(ValueError, match="data scale 10000"):
        nested_scales(train, [10000])
    with pytest.raises(ValueError, match="test_size 400"):
        split_examples(chats, 400)
