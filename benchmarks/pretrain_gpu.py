"""GPU: pretraining throughput through scripts/pretrain.py's Trainer setup: tokens/s, MFU against the
datasheet peak, peak memory, for a 125M-350M model at sequence 2048 in bf16 with FlashAttention-2 (when
flash-attn is installed) or sdpa. Synthetic packed documents (random lengths), so no dataset download.

    python benchmarks/pretrain_gpu.py --model_size 125m --batch_size 16
    python benchmarks/pretrain_gpu.py --model_size 350m --batch_size 8 --attn sdpa

Writes benchmarks/results/pretrain_gpu_<size>_<attn>.{json,md}. Exits with a message where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback

from llm_recipes.data_config import DataArguments
from llm_recipes.pretrain_config import PretrainArguments
from llm_recipes.pretrain import build_trainer
from llm_recipes.tokenizer import train_bpe_tokenizer

RESULTS = Path(__file__).parent / "results"


class StepTimer(TrainerCallback):
    def __init__(self, skip: int):
        self.skip, self.start, self.end = skip, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.end = time.perf_counter()


def synthetic_corpus(folder: Path, tokens: int, seed: int = 0) -> None:
    """Documents of random words with lengths like web text (50-3000 words), enough for `tokens` tokens."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    docs, total = [], 0
    while total < tokens:
        n = int(rng.lognormvariate(6, 1)) + 50
        docs.append(" ".join(rng.choice(words) for _ in range(min(n, 3000))))
        total += min(n, 3000) * 2
    DatasetDict({"train": Dataset.from_dict({"text": docs})}).save_to_disk(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_size", default="125m", choices=["125m", "350m", "1b"])
    parser.add_argument("--attn", default="auto", help="auto (flash_attention_2 if installed, else sdpa), sdpa, eager")
    parser.add_argument("--block_size", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (the first 10 are not timed)")
    parser.add_argument("--torch_compile", action="store_true")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark needs one (see benchmarks/results/pretrain_gpu.md)")
    skip = 10

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens_needed = args.steps * args.batch_size * args.block_size
        synthetic_corpus(tmp / "corpus", tokens_needed * 2)
        tokenizer = train_bpe_tokenizer((f"w{i}" for i in range(5000)), vocab_size=32768, model_max_length=args.block_size)
        # pad the vocabulary to 32k, so the embedding and lm_head cost what they cost in a real run
        tokenizer.add_tokens([f"<extra_{i}>" for i in range(32768 - len(tokenizer))])
        tokenizer.save_pretrained(tmp / "tokenizer")
        cfg = PretrainArguments(
            output_dir=str(tmp / "out"), tokenizer_name_or_path=str(tmp / "tokenizer"), model_size=args.model_size,
            attn_implementation=args.attn, block_size=args.block_size, per_device_train_batch_size=args.batch_size,
            max_steps=args.steps, bf16=True, torch_compile=args.torch_compile,
            gradient_checkpointing=args.gradient_checkpointing, learning_rate=3e-4, logging_steps=10,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            eval_before_training=False, dataloader_num_workers=2, seed=0,
        )
        trainer = build_trainer(DataArguments(dataset_name=str(tmp / "corpus"), dataset_test_split="none"), cfg)
        timer = StepTimer(skip)
        trainer.add_callback(timer)
        torch.cuda.reset_peak_memory_stats()
        trainer.train()
        seconds = timer.end - timer.start
        tokens = (args.steps - skip) * args.batch_size * args.block_size
        tokens_per_sec = tokens / seconds
        mfu = tokens_per_sec * trainer.flops_per_token / trainer.peak_flops
        attn = trainer.model.config._attn_implementation

    result = {
        "benchmark": "pretraining throughput on one GPU through scripts/pretrain.py's Trainer setup",
        "command": "python " + " ".join(sys.argv),
        "device": {"gpu": torch.cuda.get_device_name(), "peak_flops": trainer.peak_flops,
                   "peak_source": trainer.peak_source},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "cuda": torch.version.cuda},
        "setup": {"model_size": args.model_size, "parameters": trainer.model.num_parameters(), "attention": attn,
                  "dtype": "bf16 mixed precision", "block_size": args.block_size, "batch_size": args.batch_size,
                  "timed_steps": args.steps - skip, "torch_compile": args.torch_compile,
                  "gradient_checkpointing": args.gradient_checkpointing, "flops_per_token": trainer.flops_per_token},
        "tokens_per_sec": tokens_per_sec,
        "mfu": mfu,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    out = RESULTS / f"pretrain_gpu_{args.model_size}_{attn}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
