"""Distillation: a smaller student with the teacher's tokenizer learns the teacher's next-token distributions,
with TRL's GKDTrainer (`method: gkd`, experimental: the data's replies mixed with the student's own samples by
`lmbda`, generalised JSD by `beta`) or TRL's stable DistillationTrainer (`method: distillation`, on-policy only).

The teacher is any stage's output (full model, or adapter merged into its base) or a Hub id. The student is an
existing model (`student_model_name_or_path`, same vocabulary) or the teacher cut to `student_num_hidden_layers`
evenly spaced layers. The card and marker record both parameter counts; `scripts/export.py` takes the output.

    accelerate launch scripts/distill.py --config recipes/toy/distill.yaml
"""

from datasets import DatasetDict

from llm_recipes import data, distill, models, training
from llm_recipes.data_config import DataArguments
from llm_recipes.distill_config import DistillArguments, DistillModelArguments
from llm_recipes.parser import run_cli

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (DataArguments, DistillArguments, DistillModelArguments)


def main(data_args: DataArguments, training_args: DistillArguments, model_args: DistillModelArguments) -> None:
    training.setup(training_args)
    distill.check_arguments(training_args, model_args)

    with training.main_process_loads_data_first(training_args):
        if training_args.teacher_replies:
            dataset = distill.load_prompts(data_args, seed=training_args.seed)
        else:
            dataset = distill.load_conversations(data_args, seed=training_args.seed)
    tokenizer = models.load_tokenizer(distill.teacher_model_args(training_args, model_args), training_args.trust_remote_code)
    teacher = distill.load_teacher(training_args, model_args)
    if training_args.teacher_replies:
        dataset = DatasetDict({split: distill.with_teacher_replies(rows, teacher, tokenizer, training_args.max_new_tokens,
                                                                   training_args.per_device_eval_batch_size)
                               for split, rows in dataset.items()})
    student, facts = distill.load_student(model_args, tokenizer, teacher, training_args.trust_remote_code)

    trainer, trainer_args = distill.make_trainer(training_args, student, teacher, tokenizer, dataset,
                                                 models.peft_config(model_args))
    metrics = training.train_and_evaluate(trainer, trainer_args)
    trainer.processing_class = tokenizer  # saved as loaded (DistillationTrainer trains on a left-padding copy)

    training.save_stage(
        trainer,
        trainer_args,
        stage="distill",
        base_model=model_args.student_model_name_or_path or training_args.teacher_model_name_or_path,
        datasets_used=data.dataset_sources(data_args),
        metrics=metrics,
        extra_metrics={"method": training_args.method, "teacher": training_args.teacher_model_name_or_path, **facts,
                       **({"lmbda": training_args.lmbda, "seq_kd": training_args.seq_kd} if training_args.method == "gkd" else {}),
                       "beta": training_args.beta},
    )


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
