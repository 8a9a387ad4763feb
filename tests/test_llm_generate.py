import torch

from genrec.llm.generate import generate_answers

CHATS = [
    [{"role": "user", "content": q}, {"role": "assistant", "content": "x"}]
    for q in ("Which brand makes this product: Blue Pen?", "Hi", "Describe this product: a very long name " * 3)
]


def test_greedy_answers_do_not_depend_on_the_batch(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    one, stats = generate_answers(model, tok, CHATS, max_new_tokens=6, batch_size=1, progress=False)
    three, _ = generate_answers(model, tok, CHATS, max_new_tokens=6, batch_size=3, progress=False)
    assert one == three and len(one) == 3 and all(isinstance(a, str) for a in one)
    assert 3 <= stats["generated_tokens"] <= 18 and stats["tokens_per_s"] > 0 and stats["samples_per_s"] > 0
