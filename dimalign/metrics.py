"""Metrics of a model on an experiment's splits."""

from __future__ import annotations

import torch

from dimalign.data import Experiment
from dimalign.features import accuracy
from dimalign.models import Classifier


def accuracies(model: Classifier, exp: Experiment) -> dict[str, float]:
    """Accuracy on D_r, D_f and D_t; for backdoor also the attack success rate on stamped test
    samples of the other classes (the fraction the trigger sends to the target)."""
    retain, forget = exp.retain_idx, exp.forget_idx
    out = {
        "acc_retain": accuracy(model, exp.x_train[retain], exp.y_train[retain], exp.info),
        "acc_forget": accuracy(model, exp.x_train[forget], exp.y_train[forget], exp.info),
        "acc_test": accuracy(model, exp.x_test, exp.y_test, exp.info),
    }
    if exp.x_trigger is not None:
        target = exp.y_train[forget][:1].expand(len(exp.y_trigger))  # the relabelled class
        out["asr"] = accuracy(model, exp.x_trigger, torch.as_tensor(target), exp.info)
    return out
