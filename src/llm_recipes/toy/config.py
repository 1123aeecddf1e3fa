"""The toy world's own stage: the data generator (`scripts/toy_data.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ToyDataArguments:
    """The toy world generator (`scripts/toy_data.py`)."""

    output_dir: str = field(default="runs/toy/data", metadata={"help": "Folder that receives one dataset per subfolder."})
    seed: int = field(default=0, metadata={"help": "World seed: the same seed gives the same world."})
    n_entities: int = field(default=100, metadata={"help": "Known countries (described in the corpus before the cutoff)."})
    n_late: int = field(default=20, metadata={"help": "Countries described only after the cutoff (curation removes them)."})
    n_unknown: int = field(default=120, metadata={"help": "Countries in no document (honesty pairs and evaluation)."})
    docs_per_entity: int = field(default=10, metadata={"help": "Encyclopedia biographies per country (phrasings and order vary)."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "Share of countries kept out of SFT data."})
