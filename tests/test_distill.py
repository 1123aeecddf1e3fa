"""The distill stage run as users run it, on tiny models and the toy SFT data: the student learns the teacher's
outputs (its NLL on the teacher's greedy replies, computed here with transformers, falls), a student cut from the
teacher's layers, resume, TRL's DistillationTrainer, one-line errors (wrong data kind, another vocabulary), and the
export stage taking the student."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_script
from llm_recipes.hub import read_marker
from stage_results import fails_with, ok

COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]
PROMPTS = ["What is the capital of Lomi?", "Which language is spoken in Sello?", "When was Quagar founded?",
           "What does Brinek mainly export?"]


def distill_args(teacher, data, out, *extra):
    return ["--teacher_model_name_or_path", str(teacher), "--dataset_name", str(data / "sft"), "--output_dir", str(out),
            "--max_steps", "12", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
            "--eval_max_samples", "16", "--learning_rate", "3e-3", "--max_length", "96", "--max_new_tokens", "8",
            "--lmbda", "0.5", "--save_steps", "6", *COMMON, *extra]


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its final norm scaled 8x: its next-token distributions are peaked (a random model's are
    near uniform, and its greedy replies no likelier than any other), so there is something definite to learn;
    and with the (tied) embeddings of its blank tokens zeroed, so that its greedy replies are not all newlines."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
        model.model.embed_tokens.weight[blank] = 0
    model.config.use_cache = False  # as the toy pretraining saves it (its generation_config keeps use_cache)
    out = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def student_start_dir(tokenizer_dir, tmp_path_factory):
    """A fresh 1-layer student (hidden 64) for the teacher's tokenizer, randomly initialised with another seed."""
    from llm_recipes.models import build_model, get_architecture

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_model(get_architecture("tiny", num_layers=1), tokenizer, seed=1)
    out = tmp_path_factory.mktemp("student_start")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def greedy_teacher_replies(teacher_dir, max_new_tokens=8):
    """(prompt ids, reply ids) of the teacher's greedy replies to PROMPTS, with transformers directly."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    pairs = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        out = teacher.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, min_new_tokens=max_new_tokens)
        pairs.append((ids, out[:, ids.shape[1]:]))
    return pairs


def mean_reply_nll(model_dir, pairs) -> float:
    """The model's mean token NLL of the replies given their prompts."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, reply in pairs:
            ids = torch.cat([prompt, reply], dim=1)
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            token_logprobs = logprobs[torch.arange(len(targets)), targets][prompt.shape[1] - 1:]
            total -= token_logprobs.sum().item()
            count += len(token_logprobs)
    return total / count


def test_student_learns_the_teacher_and_export_takes_it(teacher_dir, student_start_dir, toy_data_dir, tmp_path):
    pairs = greedy_teacher_replies(teacher_dir)
    before = mean_reply_nll(student_start_dir, pairs)
    assert before == pytest.approx(mean_reply_nll(student_start_dir, pairs))  # deterministic
    out = tmp_path / "student"
    ok(run_script("distill.py", *distill_args(teacher_dir, toy_data_dir, out, "--student_model_name_or_path",
                                              str(student_start_dir), "--learning_rate", "1e-2")))
    after = mean_reply_nll(out, pairs)
    print(f"student NLL on the teacher's greedy replies: {before:.3f} -> {after:.3f}")
    assert after < 0.8 * before, (before, after)

    marker = read_marker(out)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(out)
    figures = marker["metrics"]
    assert marker["stage"] == "distill" and figures["method"] == "gkd" and figures["lmbda"] == 0.5
    assert figures["teacher_parameters"] == sum(p.numel() for p in teacher.parameters())
    assert figures["student_parameters"] == sum(p.numel() for p in student.parameters())
    assert figures["student_layers"] == 1 and figures["teacher_layers"] == 2
    card = (out / "README.md").read_text()
    assert "teacher_parameters" in card and str(teacher_dir) in card
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(teacher_dir).get_vocab()

    release = tmp_path / "release"
    ok(run_script("export.py", "--model_name_or_path", str(out), "--quantize", "torchao-int8", "--eval_dataset",
                  str(toy_data_dir / "corpus"), "--eval_max_samples", "8", "--eval_max_length", "64",
                  "--output_dir", str(release)))
    exported = AutoModelForCausalLM.from_pretrained(release)
    assert exported.config.num_hidden_layers == 1
    for name, weight in student.state_dict().items():
        assert torch.equal(weight, exported.state_dict()[name]), name


def test_student_cut_from_teacher_layers_resumes(teacher_dir, toy_data_dir, tmp_path):
    out = tmp_path / "cut"
    args = distill_args(teacher_dir, toy_data_dir, out, "--student_num_hidden_layers", "1", "--max_steps", "6",
                        "--save_steps", "3", "--learning_rate", "1e-12", "--lr_scheduler_type", "constant")
    ok(run_script("distill.py", *args))
    # learning rate ~0: the student is still the teacher's embeddings, first layer, final norm and head
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).state_dict()
    student = AutoModelForCausalLM.from_pretrained(out)
    assert student.config.num_hidden_layers == 1
    for name, weight in student.state_dict().items():
        assert torch.allclose(weight, teacher[name], atol=1e-6), name
    assert read_marker(out)["metrics"]["student"] == "teacher layers [0]"
    assert student.generation_config.use_cache  # the teacher's generation settings, not its config's use_cache

    # continued from its checkpoint into a new folder with more steps, it resumes at step 3
    longer = tmp_path / "cut_longer"
    ok(run_script("distill.py", *distill_args(teacher_dir, toy_data_dir, longer, "--student_num_hidden_layers",
                                                       "1", "--max_steps", "8", "--save_steps", "3",
                                                       "--resume_from_checkpoint", str(out / "checkpoint-3"))))
    assert json.loads((longer / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
    assert not (longer / "checkpoint-3").exists()  # started at step 3: its first checkpoint is step 6
    assert read_marker(longer)["metrics"]["student_layers"] == 1


@pytest.mark.slow
def test_distillation_trainer_and_teacher_replies(teacher_dir, student_start_dir, toy_data_dir, tmp_path):
    out = tmp_path / "onpolicy"
    ok(run_script("distill.py", *distill_args(teacher_dir, toy_data_dir, out, "--student_model_name_or_path",
                                              str(student_start_dir), "--method", "distillation", "--max_steps", "3")))
    figures = read_marker(out)["metrics"]
    assert figures["method"] == "distillation" and "lmbda" not in figures
    # RL prompts (no replies) answered by the teacher first
    out = tmp_path / "teacher_replies"
    result = ok(run_script("distill.py", *distill_args(teacher_dir, toy_data_dir, out, "--student_model_name_or_path",
                                                       str(student_start_dir), "--max_steps", "2", "--dataset_name",
                                                       str(toy_data_dir / "rl_prompts"), "--teacher_replies", "true")))
    assert "teacher replies:" in result.stdout and read_marker(out)["stage"] == "distill"


@pytest.mark.slow
def test_adapter_teacher_is_merged_into_its_base(tiny_model_dir, toy_data_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_parameters = sum(p.numel() for p in base.parameters())
    torch.manual_seed(0)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter_teacher"
    adapted.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)
    merged = adapted.merge_and_unload().state_dict()
    out = tmp_path / "from_adapter"
    ok(run_script("distill.py", *distill_args(adapter, toy_data_dir, out, "--student_num_hidden_layers", "2",
                                              "--max_steps", "1", "--learning_rate", "1e-12")))
    student = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert set(student) == set(merged)
    for name, weight in student.items():  # a student of all the teacher's layers: the merged teacher itself
        assert torch.allclose(weight, merged[name], atol=1e-6), name
    # merged, the teacher has its base's parameters (the adapter's are folded in)
    assert read_marker(out)["metrics"]["teacher_parameters"] == base_parameters


def test_errors_are_one_line(tiny_model_dir, student_start_dir, toy_data_dir, tmp_path):
    from llm_recipes.models import build_model, get_architecture
    from llm_recipes.tokenizer import train_bpe_tokenizer
    from datasets import load_dataset

    student = ["--student_model_name_or_path", str(student_start_dir)]
    # preference pairs are not conversations
    fails_with(run_script("distill.py", *distill_args(tiny_model_dir, toy_data_dir, tmp_path / "a", *student,
                                                      "--dataset_name", str(toy_data_dir / "preferences"))),
               str(toy_data_dir / "preferences"), "not a dataset of conversations")
    # a student with another tokenizer (vocabulary 300, the teacher's 512)
    corpus = load_dataset(str(toy_data_dir / "corpus"), split="train")
    other_tokenizer = train_bpe_tokenizer(corpus["text"][:200], vocab_size=300, model_max_length=256)
    other = tmp_path / "other_vocab"
    build_model(get_architecture("tiny", num_layers=1), other_tokenizer).save_pretrained(other)
    other_tokenizer.save_pretrained(other)
    fails_with(run_script("distill.py", *distill_args(tiny_model_dir, toy_data_dir, tmp_path / "c",
                                                      "--student_model_name_or_path", str(other))),
               "student_model_name_or_path", "vocabulary size", "teacher's tokenizer")
    for name in "ac":
        assert not (tmp_path / name).exists()


@pytest.mark.slow
def test_more_errors_are_one_line(tiny_model_dir, student_start_dir, toy_data_dir, tmp_path):
    student = ["--student_model_name_or_path", str(student_start_dir)]
    # plain text has no replies
    fails_with(run_script("distill.py", *distill_args(tiny_model_dir, toy_data_dir, tmp_path / "b", *student,
                                                      "--dataset_name", str(toy_data_dir / "corpus"))),
               str(toy_data_dir / "corpus"), "no prompt and reply")
    # no student; an unknown method
    fails_with(run_script("distill.py", *distill_args(tiny_model_dir, toy_data_dir, tmp_path / "d")),
               "student_model_name_or_path / student_num_hidden_layers")
    fails_with(run_script("distill.py", *distill_args(tiny_model_dir, toy_data_dir, tmp_path / "e", *student,
                                                      "--method", "kd")), "method", "gkd, distillation")
    for name in "bde":
        assert not (tmp_path / name).exists()
