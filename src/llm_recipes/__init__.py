"""llm-recipes: every stage of the LLM pipeline as a runnable recipe on the Hugging Face stack."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root (recipes/, scripts/, accelerate_configs/) for an editable or source install.
REPO_ROOT = Path(__file__).resolve().parents[2]
