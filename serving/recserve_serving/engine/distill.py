"""Knowledge distillation into a shallower student initialised from the teacher's own layers.

Copying evenly spaced teacher layers (always including the last, which feeds the head)
starts the student close to the teacher, so a few hundred steps of matching the teacher's
per-user score distribution (softened by a temperature) plus the labels recover most of
the quality; random initialisation would need orders of magnitude more data.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from recserve_serving.data import Dataset
from recserve_serving.errors import RecipeError
from recserve_serving.model import Checkpoint, CheckpointMeta, keep_encoder_layers
from recserve_serving.recipe import DistillSpec
from recserve_serving.train import InputsLoss, TrainSettings, fit, listwise_loss


def encoder_layers(checkpoint: Checkpoint) -> int:
    return int(checkpoint.model.encoder.config.num_hidden_layers)


def student_layer_indices(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, ending with the last one: 6 -> 3 keeps 1, 3, 5."""
    if not 1 <= student_layers < teacher_layers:
        raise RecipeError(
            f"distill.layers must be between 1 and {teacher_layers - 1} "
            f"(the teacher has {teacher_layers} layers), got {student_layers}"
        )
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def make_student(teacher: Checkpoint, layers: int) -> Checkpoint:
    keep = student_layer_indices(encoder_layers(teacher), layers)
    student = copy.deepcopy(teacher.model)
    keep_encoder_layers(student.encoder, keep)
    old = teacher.meta
    meta = CheckpointMeta(
        base=old.base,
        max_len=old.max_len,
        shape=old.shape,
        item_max_len=old.item_max_len,
        heads_per_layer={
            str(n): old.heads_per_layer[str(o)] for n, o in enumerate(keep) if str(o) in old.heads_per_layer
        },
        ffn_per_layer={
            str(n): old.ffn_per_layer[str(o)] for n, o in enumerate(keep) if str(o) in old.ffn_per_layer
        },
        extra={**old.extra, "distilled_from_layers": keep},
    )
    return Checkpoint(student, teacher.tokenizer, meta)


def distillation_loss(teacher: Checkpoint, group: int, temperature: float, alpha: float) -> InputsLoss:
    """alpha * T^2 * KL(teacher || student) over each user's candidates + (1 - alpha) * label loss."""
    labels_loss = listwise_loss(group)
    teacher_model = teacher.model.eval()

    def loss(logits: torch.Tensor, labels: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            target = teacher_model(**inputs).view(-1, group) / temperature
        student = logits.view(-1, group) / temperature
        soft = nn.functional.kl_div(
            nn.functional.log_softmax(student, dim=1),
            nn.functional.log_softmax(target, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return alpha * temperature**2 * soft + (1.0 - alpha) * labels_loss(logits, labels)

    return loss


def train_against_teacher(
    student: Checkpoint,
    teacher: Checkpoint,
    data: Dataset,
    *,
    steps: int,
    temperature: float,
    alpha: float,
    seed: int,
    max_len: int,
) -> dict[str, float]:
    """The shared fit loop with the teacher's scores as soft targets (distillation and recovery)."""
    for parameter in student.model.parameters():
        parameter.requires_grad_(True)
    settings = TrainSettings(steps=steps, seed=seed, max_len=max_len, freeze_layers=0)
    group = 1 + settings.negatives_per_positive
    return fit(student, data, settings, loss_for=distillation_loss(teacher, group, temperature, alpha))


def distill(
    teacher: Checkpoint, data: Dataset, spec: DistillSpec, *, seed: int = 0
) -> tuple[Checkpoint, dict[str, float]]:
    student = make_student(teacher, spec.layers)
    metrics = train_against_teacher(
        student,
        teacher,
        data,
        steps=spec.steps,
        temperature=spec.temperature,
        alpha=spec.alpha,
        seed=seed,
        max_len=teacher.meta.max_len,
    )
    return student, {f"distill_{k}": v for k, v in metrics.items()}
