"""Training curves read from the stages' logs: `trainer_state.json` (`log_history`) in a model folder, or in its
latest `checkpoint-*` folder when the final one has none."""

from __future__ import annotations

import json
import re
from pathlib import Path

# which logged keys go on which panel
PANELS = {
    "loss": re.compile(r"(^|/)(loss|eval_loss|train_loss)$"),
    "reward": re.compile(r"reward|margins|accuracies|^eval_accuracy$"),
    "kl": re.compile(r"(^|/|_)kl($|_)|objective/kl"),
}


def trainer_state_path(model_dir: str | Path) -> Path | None:
    model_dir = Path(model_dir)
    if (model_dir / "trainer_state.json").is_file():
        return model_dir / "trainer_state.json"
    checkpoints = sorted(model_dir.glob("checkpoint-*/trainer_state.json"),
                         key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit() else -1)
    return checkpoints[-1] if checkpoints else None


def read_curves(model_dir: str | Path) -> dict[str, dict[str, list[list[float]]]]:
    """{panel: {key: [[step, value], ...]}} for the loss, reward and KL keys a trainer logged (empty if none)."""
    path = trainer_state_path(model_dir)
    if path is None:
        return {}
    try:
        history = json.loads(path.read_text()).get("log_history", [])
    except (OSError, json.JSONDecodeError):
        return {}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or key in ("step", "epoch", "learning_rate", "grad_norm"):
                continue
            if key.startswith("train_") and key != "train_loss":
                continue
            for panel, pattern in PANELS.items():
                if pattern.search(key):
                    curves.setdefault(panel, {}).setdefault(key, []).append([float(step), float(value)])
                    break
    return curves
