"""llm-recipes: every stage of the LLM pipeline as a runnable recipe on the Hugging Face stack."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root (recipes/, scripts/, accelerate_configs/) for an editable or source install.
REPO_ROOT = Path(__file__).resolve().parents[2]


def _quiet_import_noise() -> None:
    """Drop the warnings optional kernels print at import on every CPU run (torchao's GPU-only .so files,
    bitsandbytes' optional `kernels` package, torch's pytree notice about torchao's enums): they say nothing
    about the user's run and bury the stage's own log lines. Everything else from these loggers still shows."""
    import logging

    noise = ("Failed to load", "is an Enum subclass and is now natively supported")

    class DropNoise(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(n in str(record.msg) for n in noise)

    for name in ("torchao", "bitsandbytes.backends.cpu.ops", "torch.utils._pytree"):
        logging.getLogger(name).addFilter(DropNoise())


_quiet_import_noise()
