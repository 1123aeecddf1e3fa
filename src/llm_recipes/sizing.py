"""Compute accounting: FLOPs per token, device peak FLOP/s (for MFU), and compute-optimal sizing.

Compute-optimal sizing follows the Chinchilla rule (Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models", arXiv:2203.15556): training compute C ~ 6 N D FLOPs for N parameters and D tokens, and a
compute-optimal run uses about D ~ 20 N tokens. Hence, for a budget C: N = sqrt(C / 120), D = 20 N.

FLOPs per token for MFU follow PaLM (Chowdhery et al. 2022, arXiv:2204.02311, appendix B): 6 N for the
matmuls of N non-embedding parameters (lm_head included) plus 12 L d T for attention scores and values
(L layers, width d, sequence length T), forward and backward, without the causal-mask halving.

    python -m llm_recipes.sizing --flops 1e21
    python -m llm_recipes.sizing --gpu_hours 100 --gpu h100 [--mfu 0.4]
    python -m llm_recipes.sizing --tokens 2.5e9
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from llm_recipes.errors import ConfigError
from llm_recipes.models import ARCHITECTURES, Architecture

TOKENS_PER_PARAMETER = 20.0  # Chinchilla (Hoffmann et al. 2022), table 3 / approach 1-2 rounding
FLOPS_PER_PARAMETER_TOKEN = 6.0  # forward (2) + backward (4) per parameter per token (Kaplan et al. 2020)
CHINCHILLA_SOURCE = "Hoffmann et al. 2022, arXiv:2203.15556 (C ~ 6ND, D ~ 20N)"

# Dense (no sparsity) BF16 tensor-core peaks from NVIDIA's datasheets; matched against torch's device name.
GPU_PEAK_FLOPS: dict[str, tuple[float, str]] = {
    "h200": (989e12, "NVIDIA H200 datasheet, dense BF16"),
    "h100 pcie": (756e12, "NVIDIA H100 PCIe datasheet, dense BF16"),
    "h100": (989e12, "NVIDIA H100 SXM datasheet, dense BF16"),
    "gh200": (989e12, "NVIDIA GH200 datasheet, dense BF16"),
    "b200": (2250e12, "NVIDIA B200 datasheet, dense BF16"),
    "a100": (312e12, "NVIDIA A100 datasheet, dense BF16"),
    "a10g": (70e12, "NVIDIA A10G (AWS) datasheet, dense BF16"),
    "a10": (125e12, "NVIDIA A10 datasheet, dense BF16"),
    "l40s": (362e12, "NVIDIA L40S datasheet, dense BF16"),
    "l4": (121e12, "NVIDIA L4 datasheet, dense BF16"),
    "4090": (165e12, "NVIDIA RTX 4090 (Ada whitepaper), dense BF16 with FP32 accumulate"),
    "3090": (71e12, "NVIDIA RTX 3090 (Ampere whitepaper), dense BF16"),
    "v100": (125e12, "NVIDIA V100 datasheet, FP16 tensor cores (no BF16)"),
    "t4": (65e12, "NVIDIA T4 datasheet, FP16 tensor cores (no BF16)"),
}


def gpu_peak(name: str) -> tuple[float, str]:
    """Peak FLOP/s of a named GPU ('h100', 'NVIDIA H100 80GB HBM3', ...) and where the figure comes from."""
    lowered = name.lower()
    for key, value in GPU_PEAK_FLOPS.items():  # ordered: 'h100 pcie' before 'h100'
        if key in lowered:
            return value
    raise ConfigError(f"gpu: unknown GPU '{name}' (known: {', '.join(GPU_PEAK_FLOPS)}); give peak_flops instead")


def measured_cpu_peak(size: int = 512, repeats: int = 5) -> float:
    """FLOP/s of an fp32 matmul on this CPU with torch's current threads (the best of a few runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def device_peak_flops(override: float | None = None) -> tuple[float, str]:
    """The peak used for MFU: an explicit figure, the datasheet figure of the CUDA device, or on CPU a
    measured fp32 matmul rate (CPUs publish no comparable peak)."""
    if override:
        return override, "given in the config (peak_flops)"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        try:
            return gpu_peak(name)
        except ConfigError:
            return float("nan"), f"unknown GPU '{name}': set peak_flops for MFU"
    return measured_cpu_peak(), f"measured fp32 matmul on this CPU ({torch.get_num_threads()} thread(s))"


def count_parameters(arch: Architecture, vocab_size: int) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of a Llama-style model; lm_head counts as non-embedding."""
    d, heads, kv = arch.hidden_size, arch.num_heads, arch.num_kv_heads
    inter = arch.intermediate_size or -(-int(d * 8 / 3) // 64) * 64
    head_dim = d // heads
    per_layer = d * d * 2 + 2 * d * kv * head_dim + 3 * d * inter + 2 * d
    body = arch.num_layers * per_layer + d
    embedding = vocab_size * d
    total = body + embedding + (0 if arch.tie_word_embeddings else embedding)
    return total, body + embedding  # the lm_head matmul costs FLOPs whether tied or not


def flops_per_token(non_embedding_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 N + 12 L d T (PaLM, appendix B)."""
    return FLOPS_PER_PARAMETER_TOKEN * non_embedding_params + 12 * num_layers * hidden_size * seq_len


@dataclass
class Proposal:
    compute_flops: float
    parameters: float
    tokens: float
    nearest_size: str
    nearest_parameters: int
    reasoning: list[str]


def chinchilla(compute_flops: float | None = None, tokens: float | None = None, vocab_size: int = 32000) -> Proposal:
    """Compute-optimal model size and tokens for a FLOPs budget, or for a token count (one of the two)."""
    if (compute_flops is None) == (tokens is None):
        raise ConfigError("sizing: give exactly one of a compute budget (FLOPs or GPU-hours) or a token count")
    if compute_flops is not None:
        if compute_flops <= 0:
            raise ConfigError(f"sizing: compute budget must be > 0, got {compute_flops}")
        n = math.sqrt(compute_flops / (FLOPS_PER_PARAMETER_TOKEN * TOKENS_PER_PARAMETER))
        d = TOKENS_PER_PARAMETER * n
        why = [f"C = {compute_flops:.3g} FLOPs; C ~ 6 N D and D ~ 20 N give N = sqrt(C / 120) = {n:.3g} parameters",
               f"D = 20 N = {d:.3g} tokens"]
    else:
        if tokens <= 0:
            raise ConfigError(f"sizing: tokens must be > 0, got {tokens}")
        d, n = tokens, tokens / TOKENS_PER_PARAMETER
        compute_flops = FLOPS_PER_PARAMETER_TOKEN * n * d
        why = [f"D = {d:.3g} tokens; D ~ 20 N gives N = D / 20 = {n:.3g} parameters",
               f"C = 6 N D = {compute_flops:.3g} FLOPs"]
    sizes = {name: count_parameters(arch, vocab_size)[0] for name, arch in ARCHITECTURES.items()}
    nearest = min(sizes, key=lambda name: abs(math.log(sizes[name] / n)))
    why.append(f"nearest named architecture: '{nearest}' ({sizes[nearest] / 1e6:.1f}M parameters at vocabulary "
               f"{vocab_size}); at 20 tokens/parameter it wants {20 * sizes[nearest]:.3g} tokens")
    why.append(f"source: {CHINCHILLA_SOURCE}")
    return Proposal(compute_flops, n, d, nearest, sizes[nearest], why)


def gpu_hours_to_flops(gpu_hours: float, gpu: str, mfu: float = 0.4) -> tuple[float, str]:
    """FLOPs delivered by `gpu_hours` on a named GPU at utilisation `mfu`, and the reasoning line."""
    peak, source = gpu_peak(gpu)
    flops = gpu_hours * 3600 * peak * mfu
    return flops, f"{gpu_hours:g} GPU-hours x {peak / 1e12:.0f} TFLOP/s peak ({source}) x MFU {mfu:g} = {flops:.3g} FLOPs"


def main(argv: list[str] | None = None) -> Proposal:
    parser = argparse.ArgumentParser(prog="python -m llm_recipes.sizing", description="Chinchilla compute-optimal sizing")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--flops", type=float, help="training compute budget in FLOPs")
    group.add_argument("--gpu_hours", type=float, help="budget in GPU-hours on --gpu")
    group.add_argument("--tokens", type=float, help="tokens available; proposes the model they train optimally")
    parser.add_argument("--gpu", default="h100", help=f"GPU for --gpu_hours ({', '.join(GPU_PEAK_FLOPS)})")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation (0.35-0.45 is typical)")
    parser.add_argument("--vocab_size", type=int, default=32000, help="vocabulary, for the named sizes' parameters")
    args = parser.parse_args(argv)
    lines = []
    flops = args.flops
    if args.gpu_hours is not None:
        flops, line = gpu_hours_to_flops(args.gpu_hours, args.gpu, args.mfu)
        lines.append(line)
    proposal = chinchilla(flops, args.tokens, args.vocab_size)
    print("\n".join(lines + proposal.reasoning))
    print(f"proposal: {proposal.parameters / 1e6:.1f}M parameters trained on {proposal.tokens / 1e9:.3g}B tokens "
          f"(model_size: {proposal.nearest_size}, max_tokens: {int(20 * proposal.nearest_parameters)})")
    return proposal


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
