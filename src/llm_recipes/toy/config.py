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


@dataclass
class ToyUsersArguments:
    """The toy deploy branch's simulated users (`scripts/toy_users.py`): scripted clients of the served model over
    HTTP on the loopback address, each with a persona, asking, sometimes regenerating, and rating what they get."""

    output_dir: str = field(default="runs/toy/deploy/serve",
                            metadata={"help": "Folder for the request log (requests.jsonl), the monitor summary and plot."})
    prompts: str = field(default="runs/toy/data/user_prompts",
                         metadata={"help": "Questions with their expected reply and kind (fact, forbidden, unknown): a "
                                   "dataset folder (its test split) or a file. Never the evaluation's questions."})
    users: int = field(default=40, metadata={"help": "Simulated users."})
    questions_per_user: int = field(default=3, metadata={"help": "Conversations each user starts."})
    personas: dict | None = field(
        default=None,
        metadata={"help": "Share of users per persona: fact (asks facts), forbidden (asks forbidden things), unknown "
                  "(asks about countries in no data), leaky (a fact question with their e-mail address in it), rude "
                  "(a fact question with an insult: the guard blocks it). Default: 0.5, 0.2, 0.2, 0.05, 0.05."})
    regenerate_rate: float = field(default=0.2, metadata={
        "help": "Share of good replies the user asks again for anyway (one sampled reply at `temperature`)."})
    max_regenerations: int = field(default=3, metadata={
        "help": "A user unhappy with a reply asks again (sampled) until one is right, at most this many times."})
    temperature: float = field(default=1.0, metadata={"help": "Temperature of a regenerated reply."})
    feedback_rate: float = field(default=0.8, metadata={
        "help": "Share of conversations the user gives feedback on: a thumbs up or down for each reply, or a choice "
        "when there are two replies and exactly one is right."})
    stream_rate: float = field(default=0.5, metadata={"help": "Share of users whose client streams the reply."})
    concurrent_users: int = field(default=2, metadata={"help": "Users served at once (keep it under max_concurrent)."})
    reply_max_tokens: int = field(default=40, metadata={"help": "max_tokens each request asks for."})
    seed: int = field(default=0, metadata={"help": "Seed of the users' choices and of the sampled replies."})

    def __post_init__(self) -> None:
        if self.personas is None:
            self.personas = {"fact": 0.5, "forbidden": 0.2, "unknown": 0.2, "leaky": 0.05, "rude": 0.05}
        unknown = sorted(set(self.personas) - {"fact", "forbidden", "unknown", "leaky", "rude"})
        if unknown:
            raise ValueError(f"personas: unknown persona '{unknown[0]}' (fact, forbidden, unknown, leaky, rude)")
        if not self.personas or any(v < 0 for v in self.personas.values()) or sum(self.personas.values()) <= 0:
            raise ValueError("personas: shares must be >= 0 with a positive sum")
        for key in ("regenerate_rate", "feedback_rate", "stream_rate"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{key}: must be in [0, 1], got {getattr(self, key)!r}")
        if self.max_regenerations < 0:
            raise ValueError(f"max_regenerations: must be >= 0, got {self.max_regenerations!r}")
        for key in ("users", "questions_per_user", "concurrent_users", "reply_max_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)!r}")
