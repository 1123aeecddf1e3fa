"""llm-recipes: every stage of the LLM pipeline as a runnable recipe on the Hugging Face stack."""

from pathlib import Path

__version__ = "0.1.0"


def _project_root() -> Path:
    """The folder holding the stage scripts, recipes and accelerate configs (scripts/, recipes/,
    accelerate_configs/): the checkout for a source or editable install, else the copies a wheel ships inside
    the package (llm_recipes/_project/, see setup.py)."""
    package = Path(__file__).resolve().parent
    checkout = package.parents[1]
    if (checkout / "scripts").is_dir() and (checkout / "recipes").is_dir():
        return checkout
    return package / "_project"


PROJECT_ROOT = _project_root()


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
