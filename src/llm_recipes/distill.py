"""Distillation of a teacher into a smaller student with the same tokenizer (`scripts/distill.py`): where the
teacher and the student come from (the student cut from the teacher's layers, or an existing model whose
vocabulary must be the teacher's), the conversations it trains on, and TRL's trainer for the chosen method
(GKDTrainer, or the stable DistillationTrainer)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re

import torch
from accelerate import PartialState
from datasets import Dataset, DatasetDict
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llm_recipes import data, models
from llm_recipes.chat_templates import align_model_with_tokenizer
from llm_recipes.distill_config import DISTILL_METHODS, DistillArguments, DistillModelArguments
from llm_recipes.errors import ConfigError, DataError, first_line

logger = logging.getLogger(__name__)


def check_arguments(training_args: DistillArguments, model_args: DistillModelArguments) -> None:
    """The teacher, exactly one student source and a known method, before anything loads."""
    if training_args.method not in DISTILL_METHODS:
        raise ConfigError(f"method: '{training_args.method}' must be one of {', '.join(DISTILL_METHODS)}")
    if not training_args.teacher_model_name_or_path:
        raise ConfigError("teacher_model_name_or_path: not set (the model to distil: a stage's output folder or a Hub id)")
    if model_args.model_name_or_path:
        raise ConfigError("model_name_or_path: not used by distill; set teacher_model_name_or_path, and "
                          "student_model_name_or_path or student_num_hidden_layers")
    if (model_args.student_model_name_or_path is None) == (model_args.student_num_hidden_layers is None):
        raise ConfigError("student_model_name_or_path / student_num_hidden_layers: set exactly one (an existing "
                          "student, or the number of teacher layers the student keeps)")
    if model_args.student_num_hidden_layers is not None and model_args.use_peft:
        raise ConfigError("use_peft: a student cut from the teacher is trained in full (LoRA only on an existing "
                          "student_model_name_or_path)")
    models.check_local_weights(training_args.teacher_model_name_or_path, "teacher_model_name_or_path", tokenizer=True,
                               base_override=training_args.teacher_base_model_name_or_path, tokenizer_from_base=True)
    if model_args.student_model_name_or_path:
        models.check_local_weights(model_args.student_model_name_or_path, "student_model_name_or_path")


def teacher_model_args(training_args: DistillArguments, model_args: DistillModelArguments) -> DistillModelArguments:
    """The model arguments with the teacher as the model (its tokenizer is the stage's)."""
    return dataclasses.replace(model_args, model_name_or_path=training_args.teacher_model_name_or_path)


# ----------------------------------------------------------------------------------------------- data
def as_conversation(row: dict) -> dict:
    """A conversation whose last turn is the reply the student learns on (prompt/completion rows joined)."""
    if "messages" in row:
        messages = row["messages"]
    elif isinstance(row["prompt"], list):
        messages = row["prompt"] + row["completion"]
    else:
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ValueError("the last turn is not an assistant reply after a prompt")
    return {"messages": messages}


def load_prompts(data_args, seed: int) -> DatasetDict:
    """The prompts the teacher will answer (`teacher_replies`): RL prompts, or those of conversations or pairs."""
    dataset = data.load_stage_data(data_args, seed=seed, kind="prompt")
    return DatasetDict({split: rows.select_columns(["prompt"]) for split, rows in dataset.items()})


def load_conversations(data_args, seed: int) -> DatasetDict:
    """SFT-kind data as conversations (`messages`) ending in an assistant reply; plain text has no replies."""
    dataset = data.load_stage_data(data_args, seed=seed, kind="sft")
    source = ", ".join(data.dataset_sources(data_args))
    out = {}
    for split, rows in dataset.items():
        if "text" in rows.column_names:
            raise DataError(f"{source}: plain text rows have no prompt and reply; distill needs conversations "
                            "(messages, sharegpt, alpaca or prompt_completion)")

        def convert(row: dict, index: int) -> dict:
            try:
                return as_conversation(row)
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"{source}[{split}]: row {index + 1}: {err}") from None

        out[split] = rows.map(convert, with_indices=True, remove_columns=rows.column_names, desc="conversations")
    return DatasetDict(out)


def with_teacher_replies(dataset: Dataset, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                         max_new_tokens: int, batch_size: int) -> Dataset:
    """Each prompt with the teacher's greedy reply as the conversation's last turn; prompts the teacher answers
    with nothing are left out (counted in the log)."""
    tokenizer = copy.copy(tokenizer)
    tokenizer.padding_side = "left"
    prompts = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in dataset["prompt"]]
    rows, empty = [], 0
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in batch]
        encoded = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt").to(teacher.device)
        with torch.no_grad():
            generated = teacher.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id)
        replies = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        for prompt, reply in zip(batch, replies):
            if reply.strip():
                rows.append({"messages": prompt + [{"role": "assistant", "content": reply.strip()}]})
            else:
                empty += 1
    if not rows:
        raise DataError("teacher_replies: the teacher answered every prompt with an empty reply")
    logger.info("teacher replies: %d prompts answered%s", len(rows), f", {empty} empty replies left out" if empty else "")
    return Dataset.from_list(rows)


def prompts_only(dataset: Dataset) -> Dataset:
    """The conversations without their replies: DistillationTrainer samples every reply from the student."""
    return dataset.map(lambda row: {"prompt": row["messages"][:-1]}, remove_columns=["messages"])


# ----------------------------------------------------------------------------------------------- models
def load_teacher(training_args: DistillArguments, model_args: DistillModelArguments) -> PreTrainedModel:
    """The teacher, frozen, in eval mode: a full model, or an adapter merged into its base."""
    teacher = models.load_causal_lm(
        training_args.teacher_model_name_or_path, training_args.teacher_base_model_name_or_path,
        key="teacher_model_name_or_path", dtype=models.resolve_dtype(model_args.dtype),
        attn_implementation=models.select_attn_implementation(model_args.attn_implementation),
        trust_remote_code=training_args.trust_remote_code,
    )
    # on this process's device already: the teacher may answer the prompts before the trainer places it
    return teacher.to(PartialState().device).eval().requires_grad_(False)


def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """`student_layers` teacher layer indices, evenly spaced, the first and the last kept."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"student_num_hidden_layers: {student_layers} must be between 1 and the teacher's "
                          f"{teacher_layers} layers")
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


LAYER_KEY = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")


def student_from_teacher(teacher: PreTrainedModel, num_layers: int) -> tuple[PreTrainedModel, list[int]]:
    """A student with the teacher's architecture cut to `num_layers` decoder layers, initialised with the kept
    layers' weights and the teacher's embeddings, final norm and head. transformers has no layer-pruning helper
    for causal LMs, so the state dict is remapped here."""
    config = copy.deepcopy(teacher.config)
    text_config = config.get_text_config()
    keep = kept_layers(text_config.num_hidden_layers, num_layers)
    text_config.num_hidden_layers = num_layers
    if getattr(text_config, "layer_types", None):  # per-layer attention kinds (sliding/full) follow the kept layers
        text_config.layer_types = [text_config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(config, dtype=teacher.dtype)
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = LAYER_KEY.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(2)) in new_index:
            state[f"{match.group(1)}{new_index[int(match.group(2))]}{match.group(3)}"] = value
    try:
        student.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"student_num_hidden_layers: cannot cut the teacher's {type(teacher).__name__} by its "
                          f"'layers.N' weights ({first_line(err)}); give a student_model_name_or_path") from None
    # the teacher's generation settings: built from the config alone, the student took its `use_cache: false` (a
    # training setting) into generation_config.json and generated 6x slower than the teacher in the toy world
    student.generation_config = copy.deepcopy(teacher.generation_config)
    student.config.name_or_path = teacher.config.name_or_path
    return student, keep


def check_same_vocabulary(student_source: str, tokenizer: PreTrainedTokenizerBase, teacher: PreTrainedModel,
                          trust_remote_code: bool = False) -> None:
    """The student must share the teacher's tokenizer: the loss compares their whole next-token distributions."""
    key = "student_model_name_or_path"
    try:
        config = AutoConfig.from_pretrained(student_source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: '{student_source}' has no readable config ({first_line(err)})") from None
    student_vocab = config.get_text_config().vocab_size
    teacher_vocab = teacher.config.get_text_config().vocab_size
    if student_vocab != teacher_vocab:
        raise ConfigError(f"{key}: vocabulary size {student_vocab}, the teacher's is {teacher_vocab}; the student "
                          "needs the teacher's tokenizer")
    if os.path.isdir(student_source) and not models.has_tokenizer(student_source):
        return  # a folder without a tokenizer: the vocabulary sizes above agree
    try:
        student_tokenizer = models.load_tokenizer_from(student_source, key, trust_remote_code=trust_remote_code)
    except ConfigError:
        return  # a Hub id without a tokenizer: the vocabulary sizes above agree
    teacher_ids = tokenizer.get_vocab()  # (it may hold the chat template's added tokens too)
    if any(teacher_ids.get(token) != index for token, index in student_tokenizer.get_vocab().items()):
        raise ConfigError(f"{key}: its tokenizer differs from the teacher's ({len(student_tokenizer)} vs "
                          f"{len(tokenizer)} tokens); the student needs the teacher's tokenizer")


def load_student(model_args: DistillModelArguments, tokenizer: PreTrainedTokenizerBase, teacher: PreTrainedModel,
                 trust_remote_code: bool = False) -> tuple[PreTrainedModel, dict]:
    """The student and facts about it for the card: an existing model (same vocabulary as the teacher), or the
    teacher cut to `student_num_hidden_layers` layers."""
    if model_args.student_num_hidden_layers is not None:
        student, keep = student_from_teacher(teacher, model_args.student_num_hidden_layers)
        align_model_with_tokenizer(student, tokenizer)
        facts = {"student": f"teacher layers {keep}"}
    else:
        source = model_args.student_model_name_or_path
        check_same_vocabulary(source, tokenizer, teacher, trust_remote_code)
        student = models.load_model(dataclasses.replace(model_args, model_name_or_path=source), tokenizer,
                                    trust_remote_code=trust_remote_code)
        facts = {"student": source}
    facts.update(teacher_parameters=teacher.num_parameters(), student_parameters=student.num_parameters(),
                 student_layers=student.config.get_text_config().num_hidden_layers,
                 teacher_layers=teacher.config.get_text_config().num_hidden_layers)
    logger.info("teacher %.2fM parameters (%d layers), student %.2fM (%d layers: %s)",
                facts["teacher_parameters"] / 1e6, facts["teacher_layers"], facts["student_parameters"] / 1e6,
                facts["student_layers"], facts["student"])
    return student, facts


# ----------------------------------------------------------------------------------------------- trainers
# DistillArguments fields that are GKD's own, or name models the trainer is given as objects here
NOT_FOR_DISTILLATION_CONFIG = {"teacher_model_name_or_path", "teacher_model_init_kwargs", "model_init_kwargs"}


def distillation_config(args: DistillArguments):
    """TRL's DistillationConfig with the recipe's training arguments, beta, temperature and max_new_tokens (as its
    max_completion_length)."""
    from trl import DistillationConfig

    ours = {f.name for f in dataclasses.fields(args) if f.init}
    shared = {f.name for f in dataclasses.fields(DistillationConfig) if f.init} & ours - NOT_FOR_DISTILLATION_CONFIG
    values = {name: getattr(args, name) for name in shared}
    values["max_completion_length"] = args.max_new_tokens
    values["remove_unused_columns"] = False
    for name in ("bf16", "gradient_checkpointing"):  # DistillationConfig's own defaults differ: keep the recipe's
        values[name] = getattr(args, name)
    return DistillationConfig(**values)


def make_trainer(training_args: DistillArguments, student, teacher, tokenizer, dataset: DatasetDict, peft_config):
    """TRL's trainer for `method`: GKDTrainer on the conversations, or DistillationTrainer on their prompts.
    Returns (trainer, the arguments it trains with)."""
    eval_dataset = dataset.get("test") if training_args.eval_strategy != "no" or "test" in dataset else None
    if training_args.method == "gkd":
        from trl.experimental.gkd import GKDTrainer

        trainer = GKDTrainer(model=student, teacher_model=teacher, args=training_args, train_dataset=dataset["train"],
                             eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=peft_config)
        return trainer, training_args
    from trl import DistillationTrainer

    args = distillation_config(training_args)
    if tokenizer.padding_side != "left":  # DistillationTrainer generates from left-padded prompts
        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "left"
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=prompts_only(dataset["train"]),
                                  eval_dataset=prompts_only(eval_dataset) if eval_dataset is not None else None,
                                  processing_class=tokenizer, peft_config=peft_config)
    return trainer, args

