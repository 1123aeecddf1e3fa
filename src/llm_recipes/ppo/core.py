"""PPO's arithmetic as pure functions on tensors, each tested against hand-computed values.

Shapes: `(batch, response_tokens)`; `mask` is 1 on a response's tokens (up to and including its EOS) and 0 on
the padding after it. Notation: per-token log-probabilities `logp` (policy), `ref_logp` (frozen reference),
`old_logp` (policy when the rollout was made); `values` V(s_t), the value of the state before token t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1 (over all of them, or along `dim`)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over the masked positions (Bessel-corrected when `unbiased` and n > 1)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked positions; with `shift_mean=False` the mean is kept (only the scale
    changes: used for rewards, whose sign matters). Masked-out positions become 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) at each position, from logits of shape (..., vocab)."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution at each position: logsumexp(z) - sum(p z)."""
    logits = logits.float()
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) on tokens sampled from the policy.

    k1 = log pi - log ref: unbiased; one token's value can be negative (a sequence's sum is negative when the
    reference likes the sample more than the policy does; its mean over samples is not).
    k3 = (ref/pi - 1) - log(ref/pi): never negative, lower variance (Schulman's estimator)."""
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator: unknown estimator '{estimator}' (k1 or k3)")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last response token (its EOS, or the last generated token)."""
    return (mask.sum(-1).long() - 1).clamp(min=0)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef x KL at every response token, plus the sequence's score at its last token.
    Returns (rewards, non-score part)."""
    non_score = -kl_coef * kl * mask
    rewards = non_score.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, non_score


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens.

    delta_t = r_t + gamma V_{t+1} - V_t (V after the last token is 0), A_t = delta_t + gamma lam A_{t+1};
    returns R_t = A_t + V_t. Padding after a response contributes nothing."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)), r = exp(logp - old_logp).
    Stats: clip fraction (tokens where the clipped term wins) and approximate KL 0.5 E[(log r)^2]."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: 0.5 x mean of max((V - R)^2, (clip(V, V_old +- eps) - R)^2)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped_loss > unclipped_loss).float(), mask)}
    return loss, stats


def response_mask(responses: torch.Tensor, stop_token_id: int | None) -> torch.Tensor:
    """1 on each response's tokens up to and including its first stop token; all 1 without a stop token."""
    if stop_token_id is None:
        return torch.ones_like(responses, dtype=torch.float)
    is_stop = responses == stop_token_id
    after_stop = (torch.cumsum(is_stop.long(), dim=1) - is_stop.long()) > 0
    return (~after_stop).float()
