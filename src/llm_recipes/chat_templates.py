"""Chat templates: named built-ins or inline Jinja, with `{% generation %}` markers for assistant-only loss.

The end-of-turn token of the template is the EOS used in training and written to `generation_config`, so a
fine-tuned model stops where its turn ends (the most common way a peer's SFT model generates forever).
"""

from __future__ import annotations

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from llm_recipes.errors import ConfigError

CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# name -> (template, special tokens it uses, end-of-turn token)
BUILTIN_TEMPLATES: dict[str, tuple[str, list[str], str]] = {
    "chatml": (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
}
END_OF_TURN_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


def resolve_template(name_or_jinja: str) -> tuple[str, list[str], str | None]:
    """A built-in name or an inline Jinja string -> (template, special tokens, end-of-turn token or None)."""
    if name_or_jinja in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name_or_jinja]
    if "{%" not in name_or_jinja and "{{" not in name_or_jinja:
        raise ConfigError(
            f"chat_template: '{name_or_jinja}' is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}) nor Jinja"
        )
    end = next((tok for tok in END_OF_TURN_CANDIDATES if tok in name_or_jinja), None)
    return name_or_jinja, [], end


def setup_chat_template(tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None) -> int:
    """Install the chat template and make its end-of-turn token the EOS; returns how many tokens were added
    to the vocabulary (the model's embeddings must then be resized)."""
    if chat_template is None and tokenizer.chat_template:
        template, specials = tokenizer.chat_template, []
        end = next((tok for tok in END_OF_TURN_CANDIDATES if tok in template), None)
    else:
        template, specials, end = resolve_template(chat_template or "chatml")
    # the end-of-turn token becomes EOS, so it must be one token of the vocabulary (an inline template may name
    # one the tokenizer lacks: it would otherwise encode as several pieces, or as <unk>)
    special = set(tokenizer.all_special_tokens)
    missing = [tok for tok in dict.fromkeys([*specials, *([end] if end else [])]) if tok not in special]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False) if missing else 0
    tokenizer.chat_template = template
    if end is not None:
        tokenizer.eos_token = end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def align_model_with_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Resize embeddings for added tokens and write EOS/PAD into the model and generation configs."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    if not hasattr(model, "generation_config"):  # a sequence classifier (reward model) does not generate
        return
    if model.generation_config is None:
        model.generation_config = GenerationConfig()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        model.generation_config.bos_token_id = tokenizer.bos_token_id
