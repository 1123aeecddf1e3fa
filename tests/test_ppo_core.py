"""PPO's arithmetic against values computed by hand."""

import math

import pytest
import torch

from llm_recipes.ppo import core


def t(*rows):
    return torch.tensor(rows, dtype=torch.float)


def test_gae_by_hand():
    # gamma 1, lambda 0.9: deltas 0.9, -0.1, -0.3 from the last token back
    adv, ret = core.gae(t([0.0, 0.0, 1.0]), t([0.5, 0.2, 0.1]), t([1, 1, 1]), gamma=1.0, lam=0.9)
    assert adv.tolist()[0] == pytest.approx([0.339, 0.71, 0.9])
    assert ret.tolist()[0] == pytest.approx([0.839, 0.91, 1.0])
    # gamma 0.5, lambda 1
    adv, _ = core.gae(t([0.0, 0.0, 1.0]), t([0.5, 0.2, 0.1]), t([1, 1, 1]), gamma=0.5, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([-0.25, 0.3, 0.9])


def test_gae_ignores_padding_after_the_response():
    adv, ret = core.gae(t([0.0, 2.0, 7.0]), t([1.0, 1.0, 5.0]), t([1, 1, 0]), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([1.0, 1.0, 0.0])
    assert ret.tolist()[0] == pytest.approx([2.0, 2.0, 0.0])


def test_whiten_by_hand():
    x, full = t([1.0, 2.0, 3.0, 4.0]), t([1, 1, 1, 1])
    std = math.sqrt(5 / 3)  # unbiased variance of 1..4
    assert core.whiten(x, full).tolist()[0] == pytest.approx([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std], rel=1e-5)
    assert core.whiten(x, full, shift_mean=False).tolist()[0] == pytest.approx(
        [2.5 - 1.5 / std, 2.5 - 0.5 / std, 2.5 + 0.5 / std, 2.5 + 1.5 / std], rel=1e-5)
    # masked positions are excluded from the statistics and come out as 0
    assert core.whiten(t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])).tolist()[0] == pytest.approx([-1, 0, 1, 0], abs=1e-6)


def test_clipped_policy_loss_by_hand():
    old = t([0.0, 0.0, 0.0, 0.0])
    logp = t([math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)])
    adv = t([1.0, -1.0, 1.0, -1.0])
    loss, stats = core.policy_loss(logp, old, adv, t([1, 1, 1, 1]), cliprange=0.2)
    # per token: max(-A r, -A clip(r)): -1.2 (clipped), 1.5, -0.5, 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approxkl"].item() == pytest.approx(0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4)
    # with ratio 1 the loss is -mean(A) and nothing is clipped
    loss, stats = core.policy_loss(old, old, adv, t([1, 1, 1, 1]), 0.2)
    assert loss.item() == pytest.approx(0.0) and stats["clipfrac"].item() == 0.0


def test_clipped_value_loss_by_hand():
    loss, stats = core.value_loss(t([2.0]), t([1.0]), t([3.0]), t([1]), cliprange_value=0.5)
    assert loss.item() == pytest.approx(0.5 * 2.25)  # clipped value 1.5: (1.5 - 3)^2 beats (2 - 3)^2
    assert stats["vf_clipfrac"].item() == 1.0
    loss, _ = core.value_loss(t([2.0]), t([1.9]), t([3.0]), t([1]), cliprange_value=0.5)
    assert loss.item() == pytest.approx(0.5)


def test_kl_penalty_and_score_placement():
    rewards, non_score = core.token_rewards(torch.tensor([2.0]), t([0.1, -0.2, 0.3]), t([1, 1, 1]), kl_coef=0.5)
    assert non_score.tolist()[0] == pytest.approx([-0.05, 0.1, -0.15])
    assert rewards.tolist()[0] == pytest.approx([-0.05, 0.1, 1.85])
    # the score goes on the last response token (the EOS), not on padding
    rewards, _ = core.token_rewards(torch.tensor([2.0]), t([0.1, -0.2, 0.0]), t([1, 1, 0]), kl_coef=0.5)
    assert rewards.tolist()[0] == pytest.approx([-0.05, 2.1, 0.0])


def test_kl_estimators():
    logp, ref = t([0.5, -0.5]), t([0.0, 0.0])
    assert core.kl_per_token(logp, ref, "k1").tolist()[0] == pytest.approx([0.5, -0.5])
    k3 = core.kl_per_token(logp, ref, "k3").tolist()[0]
    assert k3 == pytest.approx([math.exp(-0.5) - 1 + 0.5, math.exp(0.5) - 1 - 0.5])
    assert min(k3) >= 0
    with pytest.raises(ValueError):
        core.kl_per_token(logp, ref, "k2")


def test_response_mask_and_logprobs():
    responses = torch.tensor([[5, 7, 2, 9, 9], [5, 7, 8, 9, 9]])
    assert core.response_mask(responses, stop_token_id=2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    logits = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    assert core.logprobs_from_logits(logits, torch.tensor([[1, 0]])).exp().tolist()[0] == pytest.approx([0.75, 0.5])
    assert core.entropy_from_logits(logits).tolist()[0] == pytest.approx(
        [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)], rel=1e-5)
