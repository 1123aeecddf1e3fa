"""The project's PPO trainer (RLHF against a reward model), on transformers + accelerate.

One update:
  1. rollout: take `rollout_batch_size` prompts (text or conversations through the chat template), sample a
     response for each (at most `response_length` tokens, cut after the first EOS);
  2. score: the reward model reads prompt + response as text, through its own tokenizer and chat template
     (or a Python reward function does); a response without EOS loses `missing_eos_penalty`;
  3. per-token rewards: -kl_coef x KL(policy || reference) at every token, plus the score at the last one
     (optionally whitened); advantages by GAE over the values, then whitened;
  4. `num_ppo_epochs` passes over the rollouts in `num_mini_batches` minibatches (gradient accumulation over
     micro-batches of `per_device_train_batch_size`): clipped policy loss + vf_coef x clipped value loss.

The value function is a linear head on the policy's last hidden state (zero-initialised, so first values are
0) or a separate value model (e.g. initialised from the reward model). The reference is a frozen model, or
the policy with its LoRA adapter disabled, or (continuing an SFT adapter) a frozen copy of that adapter.
Checkpoints (accelerate state + progress) every `save_steps` updates; a killed run resumes from the last.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from datasets import Dataset
from torch import nn
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from llm_recipes import rewards
from llm_recipes.hub import write_text_atomic
from llm_recipes.errors import ConfigError
from llm_recipes.integrity import check_checkpoint_files, complete_checkpoints, record_run
from llm_recipes.ppo import core

logger = logging.getLogger("llm_recipes")

PROGRESS_FILE = "ppo_progress.json"  # written last into a checkpoint: a folder without it was cut off while saving
LOG_FILE = "ppo_log.jsonl"


class JsonLinesTracker(GeneralTracker):
    """accelerate tracker writing each logged update as one JSON line (`ppo_log.jsonl`, read by the report and
    copied into the final folder); accelerate has no file tracker of its own."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @property
    def tracker(self):
        return self.path

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(values) + "\n")


def trackers_for(args) -> list:
    """`report_to` as accelerate trackers (tensorboard, wandb, mlflow, trackio, ...), after the JSON lines log."""
    names = [name for name in (args.report_to or []) if name != "none"]
    unknown = [name for name in names if name not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ConfigError(f"report_to: {unknown[0]} has no accelerate tracker; the ppo stage reports to "
                          f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    return [JsonLinesTracker(os.path.join(args.output_dir, LOG_FILE)), *names]


def _disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


class PolicyAndValue(nn.Module):
    """The trained modules under one parent, so that one optimizer and one `accelerator.prepare` cover both."""

    def __init__(self, policy: PreTrainedModel, value_model: PreTrainedModel | None = None, value_head_init_std: float = 0.0):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        if value_model is None:
            hidden = policy.config.get_text_config().hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.normal_(self.value_head.weight, std=value_head_init_std) if value_head_init_std else nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            dtype = next(p for p in policy.parameters()).dtype
            self.value_head.to(dtype if dtype.is_floating_point else torch.float32)

    def forward(self, input_ids, attention_mask, position_ids):
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=self.value_model is None, use_cache=False)
        if self.value_model is None:
            hidden = out.hidden_states[-1]
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        else:
            backbone = getattr(self.value_model, self.value_model.base_model_prefix)
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state
            values = self.value_model.score(hidden).squeeze(-1)
        return out.logits, values.float()


class PPOTrainer:
    """PPO-clip with GAE and a per-token KL penalty. `reward_model` (+ its tokenizer) or `reward_function`
    (`f(prompts, completions, **columns) -> list[float]`, prompts/completions as text or messages like TRL's
    GRPO) gives the scores."""

    def __init__(
        self,
        args,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        train_dataset: Dataset,
        reward_model: PreTrainedModel | None = None,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        reward_function: rewards.RewardFunction | None = None,
        ref_model: PreTrainedModel | None = None,
        value_model: PreTrainedModel | None = None,
        peft_config=None,
        continue_adapter: bool = False,
        ptx_dataset: Dataset | None = None,
        ptx_text_dataset: Dataset | None = None,
    ):
        if reward_model is None and reward_function is None:
            raise ValueError("PPOTrainer needs a reward_model or a reward_function")
        if "prompt" not in train_dataset.column_names:
            raise ValueError(f"PPO needs a 'prompt' column; columns seen: {train_dataset.column_names}")
        self.args = args
        set_seed(args.seed)
        mixed = "bf16" if args.bf16 else ("fp16" if args.fp16 else "no")
        # split_batches: the prepared scheduler then steps once per optimizer step. Without it accelerate steps it
        # num_processes times (it assumes a dataloader sharded across processes, so fewer steps each); this trainer
        # counts its optimizer steps per process already, and 2 processes ran the whole LR schedule in half the run
        # (lr 0 from the middle on). No dataloader is prepared, so nothing else changes.
        # TensorBoard events under TENSORBOARD_LOGGING_DIR, else output_dir/runs (as Trainer's callback), in `ppo`.
        # Checkpoints are named and rotated here, not by ProjectConfiguration's automatic_checkpoint_naming and
        # total_limit: accelerate names folders by save count (a resumed run's first save collides with an existing
        # folder: ValueError), deletes the oldest before the new one is written (with total_limit 1 a kill while
        # saving leaves none), and its load_state picks the newest folder even if a kill cut it off.
        logging_dir = os.path.expanduser(os.environ.get("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs"))
        self.accelerator = Accelerator(cpu=args.use_cpu, mixed_precision=mixed,
                                       gradient_accumulation_steps=args.gradient_accumulation_steps,
                                       dataloader_config=DataLoaderConfiguration(split_batches=True),
                                       project_config=ProjectConfiguration(project_dir=args.output_dir,
                                                                           logging_dir=logging_dir),
                                       log_with=trackers_for(args))
        self.tokenizer = tokenizer
        self.stop_token_id = tokenizer.eos_token_id if args.stop_token == "eos" else None
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        if peft_config is not None:
            from peft import get_peft_model

            policy = get_peft_model(policy, peft_config)
        self.ref_adapter = None
        if ref_model is None and _is_peft(policy) and continue_adapter:
            # training continues the SFT adapter: the reference is a frozen copy of it, not the bare base
            policy.add_adapter("ref", policy.peft_config["default"])
            for name, param in policy.named_parameters():
                if ".default." in name:
                    policy.get_parameter(name.replace(".default.", ".ref.")).data.copy_(param.data)
            policy.set_adapter("default")
            for name, param in policy.named_parameters():
                if ".ref." in name:
                    param.requires_grad_(False)
            self.ref_adapter = "ref"
        elif ref_model is None and not _is_peft(policy):
            ref_model = copy.deepcopy(policy)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            _disable_dropout(ref_model)
        self.ref_model = ref_model
        _disable_dropout(policy)
        if value_model is not None:
            _disable_dropout(value_model)
        self.model = PolicyAndValue(policy, value_model, args.value_head_init_std)

        self.reward_model = reward_model.eval().requires_grad_(False) if reward_model is not None else None
        self.reward_tokenizer = reward_tokenizer
        self.reward_function = reward_function

        self.dataset = self._tokenize_prompts(train_dataset)
        self.ptx = self._tokenize_demonstrations(ptx_dataset) if ptx_dataset is not None and args.ptx_coef else None
        self.ptx_text = (self._tokenize_text(ptx_text_dataset)
                         if ptx_text_dataset is not None and args.ptx_text_coef else None)
        world = self.accelerator.num_processes
        self.local_batch = args.rollout_batch_size
        self.global_batch = self.local_batch * world
        episodes = args.total_episodes or int(args.num_train_epochs * len(self.dataset))
        self.num_updates = max(1, episodes // self.global_batch)
        if args.max_steps and args.max_steps > 0:
            self.num_updates = min(self.num_updates, args.max_steps)
        if self.local_batch % args.num_mini_batches:
            raise ValueError("rollout batch must divide by num_mini_batches")
        self.minibatch = self.local_batch // args.num_mini_batches
        if self.minibatch % args.per_device_train_batch_size:
            raise ValueError("minibatch must divide by per_device_train_batch_size")
        optimizer_steps = self.num_updates * args.num_ppo_epochs * args.num_mini_batches

        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                      eps=args.adam_epsilon, weight_decay=args.weight_decay)
        warmup = args.warmup_steps if args.warmup_steps >= 1 else math.ceil(args.warmup_steps * optimizer_steps)
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=int(warmup),
                                  num_training_steps=optimizer_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.model, optimizer, scheduler)
        if self.accelerator.num_processes > 1:
            # Every process was seeded alike so far, so the models started identical. From here each samples its own
            # responses, ptx demonstrations and minibatch orders: with one seed, all drew the same random numbers
            # (the same ptx rows). One process keeps its random stream as it was.
            set_seed(args.seed, device_specific=True)
        device = self.accelerator.device
        for m in (self.ref_model, self.reward_model):
            if m is not None:
                m.to(device)
        self.generation_config = GenerationConfig(
            max_new_tokens=args.response_length, do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
            eos_token_id=self.stop_token_id, pad_token_id=self.pad_token_id,
        )
        self.update = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------------------- data
    def _tokenize_prompts(self, dataset: Dataset) -> Dataset:
        tokenizer, max_len = self.tokenizer, self.args.max_prompt_length

        def encode(row):
            prompt = row["prompt"]
            if isinstance(prompt, list):
                text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = tokenizer(prompt)["input_ids"]
            return {"input_ids": ids[-max_len:]}

        return dataset.map(encode, desc="tokenizing prompts")

    def _tokenize_demonstrations(self, dataset: Dataset) -> list[tuple[list[int], list[int]]]:
        """(token ids, completion mask) of each demonstration: `prompt` + `completion` (messages or text)."""
        tokenizer, out = self.tokenizer, []
        for row in dataset:
            prompt, completion = row["prompt"], row["completion"]
            if isinstance(prompt, list):
                head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
            else:
                head, full = prompt, prompt + completion + (tokenizer.eos_token or "")
            head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
            ids = tokenizer(full, add_special_tokens=False)["input_ids"][: self.args.max_prompt_length + self.args.response_length]
            out.append((ids, [0] * min(len(head_ids), len(ids)) + [1] * max(len(ids) - len(head_ids), 0)))
        return out

    def _tokenize_text(self, dataset: Dataset) -> list[tuple[list[int], list[int]]]:
        """(token ids, all-ones mask) of each chunk of max_prompt_length + response_length tokens of each `text`."""
        if "text" not in dataset.column_names:
            raise ValueError(f"the ptx text dataset needs a 'text' column; columns seen: {dataset.column_names}")
        tokenizer, width = self.tokenizer, self.args.max_prompt_length + self.args.response_length
        out = []
        eos = tokenizer.eos_token or ""
        for ids in tokenizer([text + eos for text in dataset["text"]], add_special_tokens=False)["input_ids"]:
            chunks = (ids[i : i + width] for i in range(0, len(ids), width))
            out += [(chunk, [1] * len(chunk)) for chunk in chunks if len(chunk) > 1]
        return out

    def _ptx_loss(self, model, size: int, rows: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        """Mean negative log-likelihood of the masked tokens (a demonstration's completion, every token of a text
        chunk) of a random micro-batch of `rows`."""
        picks = torch.randint(len(rows), (size,)).tolist()
        width = max(len(rows[i][0]) for i in picks)
        ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((size, width), dtype=torch.long)
        target = torch.zeros((size, width), dtype=torch.float)
        for row, i in enumerate(picks):
            tokens, completion = rows[i]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            attention[row, : len(tokens)] = 1
            target[row, : len(tokens)] = torch.tensor(completion, dtype=torch.float)
        ids, attention, target = (x.to(self.accelerator.device) for x in (ids, attention, target))
        logits, _ = model(ids, attention, self._positions(attention))
        logp = core.logprobs_from_logits(logits[:, :-1], ids[:, 1:])
        return -core.masked_mean(logp, target[:, 1:])

    def _batch_indices(self, update: int) -> list[int]:
        """Prompts of `update` for this process: a seeded permutation per pass over the data, so that a resumed
        run sees the same prompts as one that was never stopped."""
        n = len(self.dataset)
        start = update * self.global_batch + self.accelerator.process_index * self.local_batch
        out = []
        for k in range(start, start + self.local_batch):
            epoch, pos = divmod(k, n)
            if not hasattr(self, "_perm") or self._perm[0] != epoch:
                g = torch.Generator().manual_seed(self.args.seed + epoch)
                self._perm = (epoch, torch.randperm(n, generator=g).tolist())
            out.append(self._perm[1][pos])
        return out

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        return ids.to(self.accelerator.device), mask.to(self.accelerator.device)

    # ------------------------------------------------------------------------------------------- forward
    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def _forward(self, model, queries, query_mask, responses, resp_mask):
        """Logits over the response tokens (temperature applied) and values, for a query + response batch."""
        input_ids = torch.cat([queries, responses], dim=1)
        attention = torch.cat([query_mask, resp_mask.long()], dim=1)
        logits, values = model(input_ids, attention, self._positions(attention))
        start = queries.shape[1] - 1
        logits = logits[:, start:-1] / self.args.temperature
        return logits, values[:, start:-1]

    def _ref_logprobs(self, queries, query_mask, responses, resp_mask) -> torch.Tensor:
        input_ids = torch.cat([queries, responses], dim=1)
        attention = torch.cat([query_mask, resp_mask.long()], dim=1)
        positions = self._positions(attention)
        policy = self.accelerator.unwrap_model(self.model).policy
        if self.ref_model is not None:
            context, model = contextlib.nullcontext(), self.ref_model
        elif self.ref_adapter is not None:
            from trl.trainer.utils import use_adapter

            context, model = use_adapter(policy, self.ref_adapter), policy
        else:
            context, model = policy.disable_adapter(), policy
        with context:
            logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=False).logits
        logits = logits[:, queries.shape[1] - 1 : -1] / self.args.temperature
        return core.logprobs_from_logits(logits, responses)

    # ------------------------------------------------------------------------------------------- rewards
    def _scores(self, rows: list[dict], completions: list[str], responses: torch.Tensor, resp_mask: torch.Tensor) -> torch.Tensor:
        prompts = [r["prompt"] for r in rows]
        if self.reward_function is not None:
            conversational = isinstance(prompts[0], list)
            shaped = [[{"role": "assistant", "content": c}] for c in completions] if conversational else completions
            columns = {k: [r[k] for r in rows] for k in rows[0] if k not in ("prompt", "input_ids")}
            scores = torch.tensor(rewards.call_reward_function(self.reward_function, prompts, shaped, **columns),
                                  dtype=torch.float)
        else:
            scores = rewards.score_with_reward_model(self.reward_model, self.reward_tokenizer, prompts, completions,
                                                     self.args.local_rollout_forward_batch_size)
        scores = scores.to(self.accelerator.device)
        if self.args.missing_eos_penalty is not None and self.stop_token_id is not None:
            no_eos = ~(responses == self.stop_token_id).any(dim=1)
            scores = scores - self.args.missing_eos_penalty * no_eos.float()
        return scores

    # ------------------------------------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, rows: list[dict]) -> dict:
        """Generate, score and compute advantages for one batch of prompts."""
        args = self.args
        model = self.model
        model.eval()
        policy = self.accelerator.unwrap_model(model).policy
        step = args.local_rollout_forward_batch_size
        out: dict[str, list] = {k: [] for k in ("queries", "query_mask", "responses", "mask", "logp", "ref_logp", "values", "entropy")}
        completions = []
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            queries, query_mask = self._left_pad([r["input_ids"] for r in chunk])
            generated = policy.generate(input_ids=queries, attention_mask=query_mask, generation_config=self.generation_config)
            responses = generated[:, queries.shape[1]:]
            mask = core.response_mask(responses, self.stop_token_id)
            responses = torch.where(mask.bool(), responses, torch.full_like(responses, self.pad_token_id))
            logits, values = self._forward(model, queries, query_mask, responses, mask)
            out["logp"].append(core.logprobs_from_logits(logits, responses))
            out["entropy"].append(core.entropy_from_logits(logits))
            out["values"].append(values)
            out["ref_logp"].append(self._ref_logprobs(queries, query_mask, responses, mask))
            out["queries"].append(queries)
            out["query_mask"].append(query_mask)
            out["responses"].append(responses)
            out["mask"].append(mask)
            for row, m in zip(responses.tolist(), mask.tolist()):
                kept = [t for t, keep in zip(row, m) if keep and t != self.stop_token_id]
                completions.append(self.tokenizer.decode(kept, skip_special_tokens=True))
        batch = {k: self._cat(v, k) for k, v in out.items()}
        mask = batch["mask"]
        scores = self._scores(rows, completions, batch["responses"], mask)
        kl = core.kl_per_token(batch["logp"], batch["ref_logp"], args.kl_estimator) * mask
        rewards, non_score = core.token_rewards(scores, kl, mask, args.kl_coef)
        if args.whiten_rewards:
            rewards = core.whiten(rewards, mask, shift_mean=False)
        advantages, returns = core.gae(rewards, batch["values"], mask, args.gamma, args.lam)
        if args.whiten_advantages:
            advantages = core.whiten(advantages, mask)
        k1 = ((batch["logp"] - batch["ref_logp"]) * mask).sum(1)
        batch.update(scores=scores, advantages=advantages, returns=returns, completions=completions)
        batch["stats"] = {
            "objective/scores": scores.mean().item(),
            "objective/kl": k1.mean().item(),
            "objective/kl_penalised": kl.sum(1).mean().item(),
            "objective/non_score_reward": non_score.sum(1).mean().item(),
            "objective/rlhf_reward": (scores + non_score.sum(1)).mean().item(),
            "policy/entropy": core.masked_mean(batch["entropy"], mask).item(),
            "val/mean": core.masked_mean(batch["values"], mask).item(),
            "response_length": mask.sum(1).mean().item(),
            "eos_rate": (batch["responses"] == self.stop_token_id).any(1).float().mean().item()
            if self.stop_token_id is not None else 0.0,
        }
        return batch

    def _cat(self, tensors: list[torch.Tensor], key: str) -> torch.Tensor:
        """Concatenate chunks whose widths differ (queries are left-padded, responses right-padded)."""
        width = max(t.shape[1] for t in tensors)
        padded = []
        for t in tensors:
            extra = width - t.shape[1]
            if extra:
                fill = self.pad_token_id if key in ("queries", "responses") else 0
                pad = torch.full((t.shape[0], extra), fill, dtype=t.dtype, device=t.device)
                t = torch.cat([pad, t], 1) if key in ("queries", "query_mask") else torch.cat([t, pad], 1)
            padded.append(t)
        return torch.cat(padded)

    # ------------------------------------------------------------------------------------------- update
    def optimise(self, batch: dict) -> dict[str, float]:
        """`num_ppo_epochs` passes of minibatch PPO over one rollout batch."""
        args = self.args
        model = self.model
        model.train()
        n = batch["responses"].shape[0]
        sums: dict[str, float] = {}
        count = 0
        micro = args.per_device_train_batch_size
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(n).tolist()
            for start in range(0, n, self.minibatch):
                mb = order[start : start + self.minibatch]
                for m0 in range(0, len(mb), micro):
                    idx = torch.tensor(mb[m0 : m0 + micro], device=batch["responses"].device)
                    with self.accelerator.accumulate(model):
                        mask = batch["mask"][idx]
                        logits, values = self._forward(model, batch["queries"][idx], batch["query_mask"][idx],
                                                       batch["responses"][idx], mask)
                        logp = core.logprobs_from_logits(logits, batch["responses"][idx])
                        pg_loss, pg_stats = core.policy_loss(logp, batch["logp"][idx], batch["advantages"][idx], mask,
                                                             args.cliprange)
                        vf_loss, vf_stats = core.value_loss(values, batch["values"][idx], batch["returns"][idx], mask,
                                                            args.cliprange_value)
                        loss = pg_loss + args.vf_coef * vf_loss
                        if self.ptx is not None:
                            ptx_loss = self._ptx_loss(model, len(idx), self.ptx)
                            loss = loss + args.ptx_coef * ptx_loss
                            sums["loss/ptx"] = sums.get("loss/ptx", 0.0) + float(ptx_loss.detach())
                        if self.ptx_text is not None:
                            text_loss = self._ptx_loss(model, len(idx), self.ptx_text)
                            loss = loss + args.ptx_text_coef * text_loss
                            sums["loss/ptx_text"] = sums.get("loss/ptx_text", 0.0) + float(text_loss.detach())
                        self.accelerator.backward(loss)
                        if self.accelerator.sync_gradients and args.max_grad_norm:
                            self.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad()
                    with torch.no_grad():
                        entropy = core.masked_mean(core.entropy_from_logits(logits), mask)
                    for key, value in (("loss/policy", pg_loss), ("loss/value", vf_loss), ("policy/clipfrac", pg_stats["clipfrac"]),
                                       ("policy/approxkl", pg_stats["approxkl"]), ("val/clipfrac", vf_stats["vf_clipfrac"]),
                                       ("policy/entropy_update", entropy), ("val/ratio", pg_stats["ratio"])):
                        sums[key] = sums.get(key, 0.0) + float(value.detach())
                    count += 1
        stats = {k: v / count for k, v in sums.items()}
        stats["lr"] = self.scheduler.get_last_lr()[0]
        return stats

    # ------------------------------------------------------------------------------------------- loop
    def train(self, resume_from_checkpoint: str | None = None) -> dict[str, float]:
        args = self.args
        if resume_from_checkpoint:
            self._load_checkpoint(resume_from_checkpoint)
        self._truncate_log()
        if self.accelerator.is_main_process:
            record_run(args.output_dir)
        # purge_step: TensorBoard hides the events a killed run wrote after the checkpoint resumed from
        self.accelerator.init_trackers("ppo", init_kwargs={"tensorboard": {"purge_step": self.update + 1 if self.update else None}})
        start_time = time.time()
        logger.info("PPO: %d updates of %d rollouts (%d PPO epochs x %d minibatches), from update %d",
                    self.num_updates, self.global_batch, args.num_ppo_epochs, args.num_mini_batches, self.update)
        while self.update < self.num_updates:
            t0 = time.time()
            rows = [self.dataset[i] for i in self._batch_indices(self.update)]
            batch = self.rollout(rows)
            stats = {**batch["stats"], **self.optimise(batch)}
            stats = {k: self._mean_across_processes(v) for k, v in stats.items()}
            self.update += 1
            stats.update(update=self.update, episode=self.update * self.global_batch, seconds=time.time() - t0)
            self.history.append(stats)
            if self.update % max(1, int(args.logging_steps)) == 0 or self.update == self.num_updates:
                self._log(stats, rows, batch["completions"])
            if args.save_strategy != "no" and self.update % max(1, int(args.save_steps)) == 0 and self.update < self.num_updates:
                self._save_checkpoint()
        runtime = time.time() - start_time
        last = self.history[-min(len(self.history), 5):] if self.history else []
        summary = {"train_runtime": runtime, "updates": self.num_updates, "episodes": self.num_updates * self.global_batch}
        for key in ("objective/scores", "objective/kl", "objective/rlhf_reward", "response_length", "eos_rate"):
            if self.history:
                summary[f"first_{key.split('/')[-1]}"] = self.history[0].get(key)
                summary[f"final_{key.split('/')[-1]}"] = sum(s[key] for s in last) / len(last)
        return summary

    def _mean_across_processes(self, value: float) -> float:
        if self.accelerator.num_processes == 1:
            return value
        t = torch.tensor([value], device=self.accelerator.device, dtype=torch.float)
        return self.accelerator.reduce(t, reduction="mean").item()

    def _log(self, stats: dict, rows: list[dict], completions: list[str]) -> None:
        if not self.accelerator.is_main_process:
            return
        logger.info(
            "ppo update %d/%d: score %.3f, kl %.3f, entropy %.3f, clipfrac %.3f, approxkl %.4f, value loss %.4f, "
            "length %.1f, eos %.2f (%.1fs)",
            stats["update"], self.num_updates, stats["objective/scores"], stats["objective/kl"], stats["policy/entropy"],
            stats["policy/clipfrac"], stats["policy/approxkl"], stats["loss/value"], stats["response_length"],
            stats["eos_rate"], stats["seconds"],
        )
        for row, completion in list(zip(rows, completions))[: self.args.num_sample_generations]:
            prompt = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else row["prompt"]
            logger.info("  sample: %r -> %r", prompt[-80:], completion[:80])
        self.accelerator.log(stats, step=stats["update"])

    # ------------------------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> None:
        folder = os.path.join(self.args.output_dir, f"checkpoint-{self.update}")
        self.accelerator.save_state(folder)
        if self.accelerator.is_main_process:
            progress = {"update": self.update, "history": self.history}
            write_text_atomic(os.path.join(folder, PROGRESS_FILE), json.dumps(progress) + "\n")  # written last
            self._rotate_checkpoints()
        self.accelerator.wait_for_everyone()

    def _rotate_checkpoints(self) -> None:
        """Keep the newest `save_total_limit` complete checkpoints, once the new one is whole (see __init__)."""
        limit = self.args.save_total_limit
        if not limit:
            return
        for folder in list_checkpoints(self.args.output_dir)[:-limit]:
            shutil.rmtree(folder, ignore_errors=True)

    def _truncate_log(self) -> None:
        """Keep only the log lines of the updates this run starts from: a killed run logged updates after its
        last checkpoint, and this run logs them again."""
        path = os.path.join(self.args.output_dir, LOG_FILE)
        if not self.accelerator.is_main_process or not os.path.isfile(path):
            return
        kept = []
        for line in Path(path).read_text().splitlines():
            try:
                if json.loads(line)["update"] <= self.update:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):  # a line cut by the kill
                continue
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))

    def _load_checkpoint(self, folder: str) -> None:
        # accelerate's load_state skips RNG states it cannot read with only an info line: check every file first
        check_checkpoint_files(folder)
        self.accelerator.load_state(folder)
        progress = json.loads(Path(folder, PROGRESS_FILE).read_text())
        self.update, self.history = progress["update"], progress["history"]
        logger.info("resumed PPO from %s (update %d)", folder, self.update)

    # ------------------------------------------------------------------------------------------- output
    def save_model(self, output_dir: str) -> None:
        """The policy (a LoRA adapter, or the full model) with its tokenizer and generation config."""
        self.accelerator.wait_for_everyone()
        policy = self.accelerator.unwrap_model(self.model).policy
        if self.ref_adapter is not None and self.ref_adapter in getattr(policy, "peft_config", {}):
            policy.delete_adapter(self.ref_adapter)
            self.ref_adapter = None
        if self.accelerator.is_main_process:
            policy.save_pretrained(output_dir)
            self.tokenizer.save_pretrained(output_dir)
            if os.path.isfile(os.path.join(self.args.output_dir, LOG_FILE)) and os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir):
                shutil.copy(os.path.join(self.args.output_dir, LOG_FILE), output_dir)

    def end(self) -> None:
        """End the run on every process: release the DDP wrapper while the process group is alive, then the group."""
        if self.accelerator.num_processes > 1:
            # DDP's Reducer holds the gloo/NCCL group. Freed only when `main` returned, after end_training() had
            # destroyed the group, its ProcessGroupGloo destructor joined a worker thread that never returned: a
            # 2-process PPO run on CPU hung at exit (3 of 19 runs; py-spy: ~ProcessGroupGloo <- ~Reducer <- run_cli),
            # as DPO did (training.save_stage). Measured: the wrapper is freed here, before the group.
            self.model = self.accelerator.unwrap_model(self.model)
            self.accelerator.free_memory()
            self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints (their progress file written) in update order."""
    return complete_checkpoints(output_dir, PROGRESS_FILE)
