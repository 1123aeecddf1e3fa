"""The embedded default: a synthetic world small enough to run the whole pipeline on a laptop CPU."""

from llm_recipes.toy.world import FACTS, Country, ToyWorld

__all__ = ["FACTS", "Country", "ToyWorld"]
