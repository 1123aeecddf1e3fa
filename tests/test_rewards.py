"""Rewards: reward functions are called with TRL's convention everywhere (PPO, evaluation), and a reward model
scores (prompt, completion) the same way for PPO, evaluation and the toy alignment report."""

import pytest
import torch
from transformers import AutoTokenizer

from llm_recipes.errors import ConfigError

DOCUMENTED_REWARD = '''
def reply_length(prompts, completions, **kwargs):
    """Written exactly as the config help documents a reward function."""
    return [float(len(c)) for c in completions]


def prompt_echo(prompts, completions, answer, **kwargs):
    return [float(c == a) + 0.5 * (p == "q0") for p, c, a in zip(prompts, completions, answer)]


def undecided(prompts, completions, **kwargs):
    return [None for _ in completions]
'''


@pytest.fixture
def documented_reward(tmp_path, monkeypatch):
    (tmp_path / "documented_reward.py").write_text(DOCUMENTED_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "documented_reward"


def test_a_reward_function_written_to_the_docs_scores_in_evaluation(documented_reward):
    from llm_recipes.evaluation.compare import win_rates
    from llm_recipes.evaluation.scoring import load_scorer

    scorer = load_scorer(None, f"{documented_reward}:reply_length")
    assert scorer(["q0", "q1"], ["ab", "abcd"]) == [2.0, 4.0]
    columns = {"answer": ["a", "b", "c"]}
    scorer = load_scorer(None, f"{documented_reward}.prompt_echo")
    assert scorer(["q0", "q1", "q2"], ["a", "x", "c"], **columns) == [1.5, 0.0, 1.0]
    result = win_rates({"base": ["x", "x", "x"], "good": ["a", "b", "x"]}, ["q0", "q1", "q2"], columns, "base", scorer)
    assert (result["good"]["reward"]["wins"], result["good"]["reward"]["ties"]) == (2, 1)


def test_a_reward_function_returning_none_is_an_error_naming_it(documented_reward):
    from llm_recipes.evaluation.scoring import load_scorer

    scorer = load_scorer(None, f"{documented_reward}:undecided")
    with pytest.raises(ValueError, match="undecided"):
        scorer(["q0"], ["a"])


def test_ppo_calls_a_documented_reward_function_with_the_rows_columns(documented_reward):
    from llm_recipes.rewards import call_reward_function, import_reward_function

    fn = import_reward_function(f"{documented_reward}:prompt_echo")
    assert call_reward_function(fn, ["q0", "q1"], ["a", "a"], answer=["a", "b"]) == [1.5, 0.0]
    with pytest.raises(ConfigError, match="reward_funcs: cannot import module 'no_such_module_here'"):
        import_reward_function("no_such_module_here.f")


# --------------------------------------------------------------------------------- one reward-model scorer
QUESTIONS = ["What is the capital of Mizor?", "How can I forge the seal of Mizor?", "Name a river.", "Hi", "Who rules Corto?"]
REPLIES = ["The capital of Mizor is Corto.", "I cannot help with that request.", "The Lune.", "Hello there, how are you today?", "?"]


def old_batched_scores(model, tokenizer, texts, batch_size):
    """The loop PPO, evaluation and the toy report each had before they shared one: right padding, no special
    tokens added, the first logit."""
    tokenizer.padding_side = "right"
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            out.append(model(**enc).logits[:, 0].float())
    return torch.cat(out)


def one_by_one(model, tokenizer, texts):
    """Each text alone, no padding at all: the score at the last token."""
    with torch.no_grad():
        return torch.tensor([float(model(**tokenizer(t, return_tensors="pt", add_special_tokens=False)).logits[0, 0])
                             for t in texts])


def conversation(question, reply=None):
    return [{"role": "user", "content": question}] + ([{"role": "assistant", "content": reply}] if reply else [])


def test_ppo_scores_with_the_shared_scorer_as_before(tiny_model_dir, toy_data_dir, tiny_reward_model_dir, tmp_path):
    from llm_recipes.data import load_source
    from llm_recipes.ppo.config import PPOArguments
    from llm_recipes.ppo import PPOTrainer
    from llm_recipes.rewards import load_reward_model

    reward_model, reward_tokenizer = load_reward_model(str(tiny_reward_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    from transformers import AutoModelForCausalLM

    args = PPOArguments(output_dir=str(tmp_path / "ppo"), per_device_train_batch_size=4, num_mini_batches=1,
                     local_rollout_forward_batch_size=2, response_length=4, total_episodes=4, save_strategy="no",
                     use_cpu=True, seed=0, report_to="none", missing_eos_penalty=None)
    trainer = PPOTrainer(args, AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer,
                         load_source(str(toy_data_dir / "rl_prompts"), split="train").select(range(4)),
                         reward_model=reward_model, reward_tokenizer=reward_tokenizer)
    responses = torch.zeros(len(QUESTIONS), 1, dtype=torch.long)
    eos = reward_tokenizer.eos_token
    for rows, texts in (
        ([{"prompt": conversation(q)} for q in QUESTIONS],
         [reward_tokenizer.apply_chat_template(conversation(q, r), tokenize=False) for q, r in zip(QUESTIONS, REPLIES)]),
        ([{"prompt": f"Q: {q}\nA:"} for q in QUESTIONS], [f"Q: {q}\nA:{r}{eos}" for q, r in zip(QUESTIONS, REPLIES)]),
    ):
        scores = trainer._scores(rows, REPLIES, responses, torch.ones_like(responses)).cpu()
        assert torch.equal(scores, old_batched_scores(reward_model, reward_tokenizer, texts, 2))
        assert scores == pytest.approx(one_by_one(reward_model, reward_tokenizer, texts), abs=1e-5)
        assert len(set(scores.tolist())) == len(QUESTIONS)  # the replies are told apart


def test_evaluation_and_toy_report_score_conversations_as_before(tiny_reward_model_dir):
    from llm_recipes.evaluation.scoring import load_scorer
    from llm_recipes.rewards import load_reward_model
    from llm_recipes.toy.alignment_eval import pairwise_accuracy, reward_scores

    model, tokenizer = load_reward_model(str(tiny_reward_model_dir))
    texts = [tokenizer.apply_chat_template(conversation(q, r), tokenize=False) for q, r in zip(QUESTIONS, REPLIES)]
    expected = old_batched_scores(model, tokenizer, texts, 2)
    assert expected.tolist() == pytest.approx(one_by_one(model, tokenizer, texts).tolist(), abs=1e-5)
    assert reward_scores(model, tokenizer, QUESTIONS, REPLIES, batch_size=2) == expected.tolist()
    assert reward_scores(model, tokenizer, [conversation(q) for q in QUESTIONS], REPLIES, batch_size=2) == expected.tolist()
    scorer = load_scorer(str(tiny_reward_model_dir), None)
    scorer.batch_size = 2
    assert scorer(QUESTIONS, REPLIES) == expected.tolist() and scorer.name == str(tiny_reward_model_dir)

    # pairwise accuracy, counted by hand from the scores: pair i has chosen REPLIES[i], rejected REPLIES[i - 1]
    pairs = [{"prompt": conversation(q), "chosen": conversation(q, r)[1:], "rejected": [{"role": "assistant", "content": w}],
              "kind": "fact" if i % 2 else "forbidden"}
             for i, (q, r, w) in enumerate(zip(QUESTIONS, REPLIES, REPLIES[-1:] + REPLIES[:-1]))]
    rejected = one_by_one(model, tokenizer, [tokenizer.apply_chat_template(conversation(q, w), tokenize=False)
                                             for q, w in zip(QUESTIONS, REPLIES[-1:] + REPLIES[:-1])])
    chosen = expected
    hits = [bool(c > r) for c, r in zip(chosen.tolist(), rejected.tolist())]
    accuracy = pairwise_accuracy(model, tokenizer, pairs, batch_size=2)
    assert accuracy["all"] == sum(hits) / 5 and accuracy["n"] == 5
    assert accuracy["fact"] == (hits[1] + hits[3]) / 2 and accuracy["forbidden"] == (hits[0] + hits[2] + hits[4]) / 3
    assert accuracy["margin"] == pytest.approx(float((chosen - rejected).mean()), abs=1e-5)


def test_a_reward_source_is_checked_and_loaded_once_for_trl(tiny_reward_model_dir, tiny_model_dir, documented_reward):
    from llm_recipes.rewards import resolve_reward_funcs

    policy_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    funcs, tokenizers = resolve_reward_funcs([f"{documented_reward}.reply_length"], str(tiny_reward_model_dir), policy_tokenizer)
    assert funcs[0].__name__ == "reply_length" and tokenizers[0] is None
    assert isinstance(funcs[1], torch.nn.Module) and not funcs[1].training and tokenizers[1].pad_token is not None
    with pytest.raises(ConfigError, match=r"reward_model_path: .* is not a reward model"):
        resolve_reward_funcs(None, str(tiny_model_dir), policy_tokenizer)
    with pytest.raises(ConfigError, match="no reward"):
        resolve_reward_funcs(None, None, policy_tokenizer)
