"""The project's PPO (TRL removed its PPOTrainer): pure PPO arithmetic in `core`, the trainer in `trainer`."""

from llm_recipes.ppo.trainer import PPOTrainer, list_checkpoints

__all__ = ["PPOTrainer", "list_checkpoints"]
