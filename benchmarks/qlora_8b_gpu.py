"""GPU: QLoRA SFT of an 8B-architecture model (Llama-3.1-8B shapes, random init: models.ARCHITECTURES['8b'],
vocabulary 128,256) on ONE GPU at sequence length 2048: 4-bit NF4 base (double quantisation, bf16 compute),
LoRA on all linear layers, bf16, gradient checkpointing, FlashAttention-2 when flash-attn is installed (else
sdpa), through TRL's SFTTrainer as scripts/sft.py uses it. Measures peak GPU memory and training tokens/s, and
compares them with a published figure (torchtune Llama-3.1-8B QLoRA on one RTX 4090: 7.4 GiB, 2,413 tok/s).

    python benchmarks/qlora_8b_gpu.py                       # batch 1 x 2048, 30 steps (5 untimed)
    python benchmarks/qlora_8b_gpu.py --batch_size 2 --attn sdpa
    python benchmarks/qlora_8b_gpu.py --model_size tiny --seq_len 64 --steps 3 --allow_cpu   # a CPU smoke check only

Writes benchmarks/results/qlora_8b_gpu.{json,md} (a smoke check or another size writes qlora_<size>_check.* in the
temporary folder instead). Exits with a message where there is no CUDA GPU. Random weights: the loss is
meaningless, the cost per token is that of the real model (same shapes; the attention kernel does not look at
values). Needs ~16 GB of disk for the bf16 weights it writes once and reloads in 4-bit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ANCHOR = {"source": "torchtune Llama-3.1-8B QLoRA, one RTX 4090 (published)", "peak_memory_gib": 7.4, "tokens_per_sec": 2413}
LLAMA3_VOCAB = 128256


def attention(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "sdpa"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_size", default="8b", help="a key of llm_recipes.models.ARCHITECTURES (8b is the benchmark)")
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps; the first --skip are not timed")
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--attn", default="auto", help="auto (flash_attention_2 if installed, else sdpa), sdpa, eager")
    parser.add_argument("--allow_cpu", action="store_true", help="run on CPU (a smoke check of the code path, tiny sizes)")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("qlora_8b_gpu: no CUDA GPU here; this benchmark needs one (4-bit QLoRA of an 8B model at 2048 tokens). "
              "Nothing was measured; see benchmarks/results/qlora_8b_gpu.md.", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import bitsandbytes
    import peft
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from llm_recipes.models import get_architecture
    from llm_recipes.tokenizer import train_bpe_tokenizer

    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    arch = get_architecture(args.model_size)
    attn = attention(args.attn)
    vocab = LLAMA3_VOCAB if args.model_size == "8b" else 512
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=max(arch.max_position_embeddings, args.seq_len), rope_theta=arch.rope_theta,
        tie_word_embeddings=arch.tie_word_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.start = self.end = None

        def on_step_begin(self, a, state, control, **kwargs):
            if state.global_step == args.skip:
                if cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.end = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="qlora_bench_") as tmp:
        tmp = Path(tmp)
        # 1. random init in bf16, written once: from_pretrained then quantises it to NF4 as it loads
        t0 = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(device):
            base = LlamaForCausalLM(config).to(dtype)
        n_params = base.num_parameters()
        base.save_pretrained(tmp / "base")
        del base
        if cuda:
            torch.cuda.empty_cache()
        init_seconds = time.perf_counter() - t0

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        model = AutoModelForCausalLM.from_pretrained(tmp / "base", quantization_config=quant, dtype=dtype,
                                                     attn_implementation=attn, device_map={"": 0} if cuda else None)
        weights_gib = torch.cuda.memory_allocated() / 2**30 if cuda else None

        # 2. data: random token ids, every row exactly seq_len long (no padding: every token counts)
        tokenizer = train_bpe_tokenizer([f"word{i} text" for i in range(200)], vocab_size=300, model_max_length=args.seq_len)
        g = torch.Generator().manual_seed(0)
        rows = (args.steps + 1) * args.batch_size
        ids = torch.randint(3, vocab, (rows, args.seq_len), generator=g).tolist()
        dataset = Dataset.from_dict({"input_ids": ids})

        sft_args = SFTConfig(
            output_dir=str(tmp / "out"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            max_length=args.seq_len, packing=False, learning_rate=2e-4, lr_scheduler_type="constant",
            bf16=cuda, use_cpu=not cuda, gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )
        lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        timer = StepTimer()
        trainer = SFTTrainer(model=model, args=sft_args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora, callbacks=[timer])
        trainable, total = trainer.model.get_nb_trainable_parameters()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        timed_steps = args.steps - args.skip
        seconds = timer.end - timer.start
        tokens_per_sec = timed_steps * args.batch_size * args.seq_len / seconds
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]

    peak_alloc = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    peak_reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else None
    result = {
        "benchmark": "qlora_8b_gpu", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__},
        "model_size": args.model_size, "parameters": n_params, "trainable_parameters": trainable, "vocab_size": vocab,
        "quantization": f"nf4 + double quant, {str(dtype).removeprefix('torch.')} compute", "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r,
                                                                     "target_modules": "all-linear"},
        "attention": attn, "gradient_checkpointing": True, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "steps": args.steps, "timed_steps": timed_steps, "timed_seconds": round(seconds, 3),
        "tokens_per_sec": round(tokens_per_sec, 1), "weights_memory_gib": weights_gib,
        "peak_memory_allocated_gib": peak_alloc, "peak_memory_reserved_gib": peak_reserved,
        "init_and_save_seconds": round(init_seconds, 1), "losses": losses, "anchor": ANCHOR,
    }
    if cuda:
        result["vs_anchor"] = {"tokens_per_sec_ratio": round(tokens_per_sec / ANCHOR["tokens_per_sec"], 2),
                               "peak_memory_ratio": round(peak_reserved / ANCHOR["peak_memory_gib"], 2)}
    official = cuda and args.model_size == "8b" and args.seq_len == 2048
    out = RESULTS if official else Path(tempfile.gettempdir())
    stem = "qlora_8b_gpu" if official else f"qlora_{args.model_size}_check"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"saved {out / stem}.json and .md")
    return 0


def markdown(r: dict) -> str:
    mem = (f"{r['peak_memory_reserved_gib']:.2f} GiB reserved ({r['peak_memory_allocated_gib']:.2f} GiB allocated; "
           f"4-bit weights {r['weights_memory_gib']:.2f} GiB)") if r["peak_memory_reserved_gib"] is not None else "n/a (CPU)"
    lines = [
        "# QLoRA SFT of an 8B-architecture model on one GPU (benchmarks/qlora_8b_gpu.py)", "",
        f"{r['date']}; {r['device']}; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".", "",
        f"`{r['command']}`: {r['model_size']} ({r['parameters'] / 1e9:.2f}B parameters, vocabulary {r['vocab_size']}), "
        f"{r['quantization']}, LoRA r={r['lora']['r']} all-linear ({r['trainable_parameters'] / 1e6:.1f}M trainable), "
        f"{r['attention']}, gradient checkpointing, sequence {r['seq_len']} x batch {r['batch_size']}, "
        f"{r['timed_steps']} timed steps.", "",
        "| | ours | anchor (torchtune, RTX 4090) |", "|---|---:|---:|",
        f"| tokens/s | {r['tokens_per_sec']:,.0f} | {ANCHOR['tokens_per_sec']:,} |",
        f"| peak memory | {mem} | {ANCHOR['peak_memory_gib']} GiB |", "",
        "Not like for like: an H100 has ~3x a 4090's dense bf16 throughput; the memory figures compare directly "
        "(torchtune's figure is its peak reserved memory at its own batch and sequence settings).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
