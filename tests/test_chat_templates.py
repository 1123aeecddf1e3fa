"""Chat templates: ChatML rendering, {% generation %} masks, EOS = end-of-turn everywhere, inline Jinja,
unknown names, embeddings resized for added tokens, and a fine-tuned model that stops at its EOS."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tok_models
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from llm_recipes import models
from llm_recipes.chat_templates import (
    CHATML,
    align_model_with_tokenizer,
    resolve_template,
    setup_chat_template,
)
from llm_recipes.model_config import ModelArguments
from llm_recipes.errors import ConfigError

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of Ardonia?"},
    {"role": "assistant", "content": "The capital of Ardonia is Velan."},
    {"role": "user", "content": "And its main export?"},
    {"role": "assistant", "content": "The main export of Ardonia is tea."},
]


def plain_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level BPE tokenizer with <s>/</s> and no chat tokens or template (as many base models ship)."""
    tok = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [m["content"] for m in CONVERSATION] * 5
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


# ----------------------------------------------------------------------------------------------- rendering
def test_chatml_rendering(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of Ardonia?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of Ardonia is Velan.<|im_end|>\n"
        "<|im_start|>user\nAnd its main export?<|im_end|>\n"
        "<|im_start|>assistant\nThe main export of Ardonia is tea.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    for special in ("<|im_start|>", "<|im_end|>"):  # single tokens, never split into pieces
        assert ids.count(tokenizer.convert_tokens_to_ids(special)) == 5


def test_generation_markers_mask_answers_and_their_end_of_turn(tokenizer):
    out = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    trained = [i for i, m in zip(ids, mask) if m]
    assert tokenizer.decode(trained) == "The capital of Ardonia is Velan.<|im_end|>The main export of Ardonia is tea.<|im_end|>"
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    im_end_positions = [i for i, t in enumerate(ids) if t == end]
    # the assistants' two <|im_end|> (the 3rd and 5th) are in the mask, the system's and users' are not
    assert [mask[i] for i in im_end_positions] == [0, 0, 1, 0, 1]
    # the newline after an answer's <|im_end|> and the role header are outside it
    assert tokenizer.decode([i for i, m in zip(ids, mask) if not m]).count("<|im_start|>assistant\n") == 2


# ----------------------------------------------------------------------------------------------- EOS
def test_eos_is_end_of_turn_in_tokenizer_model_and_generation_config(tiny_model_dir, tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == end
    assert tokenizer.pad_token_id not in (None, end)
    loaded = models.load_tokenizer(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    model = models.load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)), loaded)
    assert loaded.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id == end
    assert model.generation_config.pad_token_id == loaded.pad_token_id


def test_setup_chat_template_on_a_plain_tokenizer_sets_eos():
    tok = plain_tokenizer()
    assert tok.chat_template is None and tok.eos_token == "</s>"
    added = setup_chat_template(tok)  # no template of its own: ChatML
    assert added == 2 and tok.chat_template == CHATML
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token is not None
    again = setup_chat_template(tok)  # idempotent: the tokenizer's own template is kept, nothing added
    assert again == 0 and tok.chat_template == CHATML


def test_inline_jinja_template():
    jinja = (
        "{%- for m in messages %}[{{ m['role'] }}] {% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] }}<|end|>{% endgeneration %}{% else %}{{ m['content'] }}<|end|>{% endif %}{{ '\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}[assistant] {% endif %}"
    )
    assert resolve_template(jinja) == (jinja, [], "<|end|>")
    tok = plain_tokenizer()
    n = len(tok)
    added = setup_chat_template(tok, jinja)
    # the end-of-turn token named by the template becomes EOS, as one new token (not <unk>, not pieces)
    assert added == 1 and len(tok) == n + 1
    assert tok.eos_token == "<|end|>" and tok.eos_token_id == n and tok.eos_token_id != tok.unk_token_id
    text = tok.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    assert text == "[user] What is the capital of Ardonia?<|end|>\n[assistant] The capital of Ardonia is Velan.<|end|>\n"
    out = tok.apply_chat_template(CONVERSATION[1:3], return_dict=True, return_assistant_tokens_mask=True)
    trained = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert trained[-1] == tok.eos_token_id and tok.decode(trained) == "The capital of Ardonia is Velan.<|end|>"


@pytest.mark.parametrize("name", ["zephyr", "chatml2", ""])
def test_unknown_template_name_is_a_config_error(name, tiny_model_dir):
    with pytest.raises(ConfigError, match="chat_template: .* is neither a built-in"):
        setup_chat_template(plain_tokenizer(), name or "not a template")
    with pytest.raises(ConfigError, match="chat_template"):
        models.load_tokenizer(ModelArguments(model_name_or_path=str(tiny_model_dir), chat_template=name or "x"))


def test_adding_chatml_resizes_the_model_embeddings(tmp_path):
    tok = plain_tokenizer()
    base_vocab = len(tok)
    config = LlamaConfig(vocab_size=base_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    args = ModelArguments(model_name_or_path=str(tmp_path), chat_template="chatml")
    loaded_tok = models.load_tokenizer(args)
    assert len(loaded_tok) == base_vocab + 2
    model = models.load_model(args, loaded_tok)
    assert model.get_input_embeddings().weight.shape[0] == len(loaded_tok) == model.config.vocab_size
    assert model.get_output_embeddings().weight.shape[0] == len(loaded_tok)
    end = loaded_tok.convert_tokens_to_ids("<|im_end|>")
    assert model.config.eos_token_id == model.generation_config.eos_token_id == loaded_tok.eos_token_id == end
    ids = loaded_tok.apply_chat_template(CONVERSATION, return_tensors="pt", return_dict=True)["input_ids"]
    assert ids.max() >= base_vocab and torch.isfinite(model(ids).logits).all()  # new tokens embed


def test_align_never_shrinks_embeddings(tokenizer):
    model = models.build_model(models.get_architecture("tiny"), tokenizer)
    model.resize_token_embeddings(len(tokenizer) + 64)  # padded to a multiple, as some checkpoints are
    align_model_with_tokenizer(model, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 64


# ----------------------------------------------------------------------------------------------- stopping
@pytest.fixture(scope="module")
def sft_model_dir(tmp_path_factory, tiny_model_dir, toy_data_dir):
    from test_sft import (
        full_sft_run,  # the full fine-tuning run of test_sft, run once per session
    )

    return full_sft_run(tmp_path_factory, tiny_model_dir, toy_data_dir)[1]


def greedy(model, tokenizer, question: str, max_new_tokens: int = 40) -> list[int]:
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():  # no eos_token_id passed: the saved generation_config must carry it
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def test_fine_tuned_model_stops_at_eos(sft_model_dir, tiny_model_dir, toy_data_dir):
    from datasets import load_dataset

    tokenizer = AutoTokenizer.from_pretrained(sft_model_dir)
    model = AutoModelForCausalLM.from_pretrained(sft_model_dir).eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == end
    files = str(toy_data_dir / "sft" / "data" / "test-00000-of-00001.parquet")
    questions = [row["messages"][0]["content"] for row in load_dataset("parquet", data_files=files, split="train").select(range(6))]
    for question in questions:
        new = greedy(model, tokenizer, question)
        assert new[-1] == end and len(new) < 40, f"{question!r} -> {tokenizer.decode(new)!r}"
        assert new.count(end) == 1
        answer = tokenizer.decode(new, skip_special_tokens=True)
        assert answer.endswith(".") and len(answer.split()) >= 3, answer  # one sentence, as trained

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # untrained: never ends its turn
    assert end not in greedy(base, tokenizer, questions[0], max_new_tokens=20)
