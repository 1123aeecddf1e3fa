"""Distillation (`scripts/distill.py`): TRL's GKDConfig with the project's defaults, and where the teacher and the
student come from (read by `llm_recipes.distill`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl.experimental.gkd import GKDConfig

from llm_recipes.model_config import ModelArguments

DISTILL_METHODS = ("gkd", "distillation")


@dataclass
class DistillArguments(GKDConfig):
    """Distillation of a teacher into a smaller student with the same tokenizer: TRL's GKDConfig (generalised
    JSD between the student's and the teacher's next-token distributions, on the data's replies and, with
    probability `lmbda`, on the student's own samples) with the project's defaults. `method: distillation` runs
    TRL's stable DistillationTrainer instead (fully on-policy: the student samples every reply; the same `beta`,
    `temperature`, and `max_new_tokens` as its max_completion_length)."""

    method: str = field(
        default="gkd",
        metadata={
            "help": "gkd: TRL's experimental GKDTrainer (the data's replies mixed with on-policy samples by lmbda; "
            "seq_kd for the teacher's own replies). distillation: TRL's stable DistillationTrainer (on-policy only: "
            "lmbda and seq_kd do not apply; it trains on the prompts of the conversations)."
        },
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The teacher: any stage's output folder (full model, or adapter merged into its base) or a Hub "
            "id. Its tokenizer is the student's."
        },
    )
    teacher_base_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Base model of an adapter teacher. Unset: the adapter's own base_model_name_or_path."},
    )
    teacher_replies: bool = field(
        default=False,
        metadata={
            "help": "Before training, the teacher answers every prompt (greedy, up to max_new_tokens) and its reply "
            "replaces the data's (sequence-level distillation data). The data may then be prompts alone (RL "
            "prompts, or the prompts of conversations or pairs)."
        },
    )
    output_dir: str | None = field(default="runs/distill", metadata={"help": "Checkpoints and the final student."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    max_length: int | None = field(default=1024, metadata={"help": "Prompt + reply tokens (the oldest are cut)."})
    lmbda: float = field(
        default=0.5,
        metadata={"help": "Share of training steps on the student's own samples (on-policy); the rest use the "
                          "data's replies (method gkd)."},
    )
    beta: float = field(
        default=0.5,
        metadata={"help": "Generalised JSD interpolation: 0 forward KL(teacher||student), 1 reverse KL, 0.5 JSD."},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens per on-policy sample."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory (GPU recipes)."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so a killed run resumes."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})


@dataclass
class DistillModelArguments(ModelArguments):
    """The student: an existing model (`student_model_name_or_path`), or the teacher cut to
    `student_num_hidden_layers` layers (evenly spaced, first and last kept) with its embeddings, final norm and
    head. `dtype`, attention, LoRA and quantization settings apply to the student; the teacher is loaded in the
    same dtype."""

    student_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "An existing student: folder or Hub id, with the teacher's tokenizer and vocabulary size."},
    )
    student_num_hidden_layers: int | None = field(
        default=None,
        metadata={
            "help": "Build the student from the teacher: keep this many of its decoder layers, evenly spaced (the "
            "first and the last kept), with its embeddings, final norm and head (a standard initialisation of a "
            "distilled student)."
        },
    )
