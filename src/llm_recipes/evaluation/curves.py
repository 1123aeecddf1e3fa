"""Training curves read from the stages' logs: `trainer_state.json` (`log_history`) in a model folder, or in its
latest `checkpoint-*` folder when the final one has none, and the PPO stage's `ppo_log.jsonl` (one line per
update)."""

from __future__ import annotations

import json
import re
from pathlib import Path

# which logged keys go on which panel
PANELS = {
    "loss": re.compile(r"(^|/)(loss|eval_loss|train_loss)$"),
    "reward": re.compile(r"reward|margins|accuracies|^eval_accuracy$|/scores$"),
    "kl": re.compile(r"(^|/|_)kl($|_)|objective/kl"),
}


def trainer_state_path(model_dir: str | Path) -> Path | None:
    model_dir = Path(model_dir)
    if (model_dir / "trainer_state.json").is_file():
        return model_dir / "trainer_state.json"
    checkpoints = sorted(model_dir.glob("checkpoint-*/trainer_state.json"),
                         key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit() else -1)
    return checkpoints[-1] if checkpoints else None


def _log_history(model_dir: Path) -> list[dict]:
    """Logged entries with a `step`: the Trainer's log_history, else the PPO trainer's per-update log."""
    path = trainer_state_path(model_dir)
    try:
        if path is not None:
            return json.loads(path.read_text()).get("log_history", [])
        ppo_log = model_dir / "ppo_log.jsonl"
        if ppo_log.is_file():
            entries = [json.loads(line) for line in ppo_log.read_text().splitlines() if line.strip()]
            return [{**e, "step": e.get("update", i + 1)} for i, e in enumerate(entries)]
    except (OSError, json.JSONDecodeError):
        pass
    return []


def read_curves(model_dir: str | Path) -> dict[str, dict[str, list[list[float]]]]:
    """{panel: {key: [[step, value], ...]}} for the loss, reward and KL keys a trainer logged (empty if none)."""
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for entry in _log_history(Path(model_dir)):
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or key in ("step", "epoch", "learning_rate", "grad_norm", "update", "episode"):
                continue
            if key.startswith("train_") and key != "train_loss":
                continue
            for panel, pattern in PANELS.items():
                if pattern.search(key):
                    curves.setdefault(panel, {}).setdefault(key, []).append([float(step), float(value)])
                    break
    return curves
