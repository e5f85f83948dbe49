"""Loss pieces several methods share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (Hinton et al. 2015)."""
    t = temperature
    log_s = F.log_softmax(student.float() / t, dim=1)
    log_t = F.log_softmax(teacher.float() / t, dim=1)
    return t * t * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


def random_wrong_labels(labels: torch.Tensor, num_classes: int,
                        generator: torch.Generator) -> torch.Tensor:
    """A uniformly drawn label other than the true one, per sample."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


@torch.no_grad()
def teacher_logits(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return teacher(x)
