"""The baselines MUDA is compared with, each only its phases and step loss.

Defaults follow each paper where it states them; where a paper's setting is for CIFAR-scale
training or is not stated, the knob's `source` says what we chose and why.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dimalign.methods.base import (
    SCHEDULE,
    Batch,
    Context,
    Knob,
    MethodSpec,
    Phase,
    common_knobs,
    register,
)
from dimalign.methods.losses import distill_kl, random_wrong_labels, teacher_logits

# Knobs are listed in display order: a method's own (its loss weights first), then the common
# "Schedule" and "Optimiser" groups of common_knobs; the first group is shown open.
LOSS = "Loss weights"


def _retain_pass(ctx: Context, epoch: int) -> list[Phase]:
    return [Phase("train", "retain", ctx.steps_for(ctx.n_retain))]


def _forget_pass(ctx: Context, epoch: int) -> list[Phase]:
    return [Phase("ascent", "forget", ctx.steps_for(ctx.n_forget))]


def _paired_pass(ctx: Context, epoch: int) -> list[Phase]:
    # one pass over the retain data, a forget batch beside every retain batch
    return [Phase("train", "both", ctx.steps_for(ctx.n_retain))]


# ---------------------------------------------------------------------------- retrain

register(MethodSpec(
    "retrain", "Retrain", "Train from scratch on D_r only: the gold standard (the cached "
    "retrained baseline; its knobs are train.*)", "—", {}, lambda ctx, e: [], None,
    trains=False))


# ---------------------------------------------------------------------------- FT

def _ft_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    return {"ce_retain": F.cross_entropy(ctx.model(b.xr), b.yr)}


register(MethodSpec(
    "ft", "FT", "Fine-tune on D_r only (catastrophic forgetting of D_f)",
    "Warnecke et al. 2023; setting of Jia et al. 2023 (Model Sparsity Can Simplify Machine "
    "Unlearning)",
    common_knobs(lr=0.01, epochs=5, source="paper: Jia et al. 2023 use lr in [0.01, 0.1], "
                 "10 epochs; choice: 5 epochs for the small CPU models"),
    _retain_pass, _ft_loss))


# ---------------------------------------------------------------------------- GA, NegGrad+

def _ga_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    return {"neg_ce_forget": -F.cross_entropy(ctx.model(b.xf), b.yf)}


register(MethodSpec(
    "ga", "GA", "Gradient ascent on the forget set's cross-entropy",
    "Thudi et al. 2022, Unrolling SGD; setting of Jia et al. 2023",
    common_knobs(lr=1e-3, epochs=5, source="paper: Jia et al. 2023 search lr in [1e-6, 1e-3], "
                 "5 epochs; choice: the top of that range, the forget set is small here"),
    _forget_pass, _ga_loss))


def _neggrad_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    logits = ctx.model(torch.cat([b.xr, b.xf]))
    lr_, lf = logits[: len(b.xr)], logits[len(b.xr):]
    return {"ce_retain": F.cross_entropy(lr_, b.yr),
            "neg_ce_forget": -ctx.params["alpha"] * F.cross_entropy(lf, b.yf)}


register(MethodSpec(
    "neggrad_plus", "NegGrad+", "Descend on D_r and ascend on D_f at once: CE(D_r) − α·CE(D_f)",
    "Kurmanji et al. 2023, Towards Unbounded Machine Unlearning (NeurIPS)",
    {"alpha": Knob(float, 0.2, "weight of the forget ascent", 0.0, 100.0,
                   source="choice: the paper tunes β per setting", group=LOSS),
     **common_knobs(lr=0.01, epochs=3, source="choice: matched to FT")},
    _paired_pass, _neggrad_loss))


# ---------------------------------------------------------------------------- RL

def _rl_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    wrong = random_wrong_labels(b.yf, ctx.num_classes, ctx.generator)
    logits = ctx.model(torch.cat([b.xr, b.xf]))
    return {"ce_retain": F.cross_entropy(logits[: len(b.xr)], b.yr),
            "ce_relabelled": F.cross_entropy(logits[len(b.xr):], wrong)}


register(MethodSpec(
    "rl", "RL", "Random labels: train on D_f with random wrong labels, alongside D_r",
    "Golatkar et al. 2020; setting of Jia et al. 2023 and Fan et al. 2024",
    common_knobs(lr=0.01, epochs=3, source="paper: Fan et al. 2024 lr 0.01, 10 epochs; choice: "
                 "3 epochs"),
    _paired_pass, _rl_loss))


# ---------------------------------------------------------------------------- ℓ1-sparse

def _l1_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    # the l1 weight decays linearly to zero over the run, as in Jia et al.
    alpha = ctx.params["alpha"] * (1.0 - ctx.state.get("progress", 0.0))
    l1 = sum(p.abs().sum() for p in ctx.model.parameters())
    return {"ce_retain": F.cross_entropy(ctx.model(b.xr), b.yr), "l1": alpha * l1}


register(MethodSpec(
    "l1_sparse", "ℓ1-sparse", "Fine-tune on D_r with an ℓ1 penalty on the weights that decays "
    "linearly", "Jia et al. 2023, Model Sparsity Can Simplify Machine Unlearning (NeurIPS)",
    {"alpha": Knob(float, 5e-4, "ℓ1 weight at the start (decays linearly to 0)", 0.0, 1.0,
                   source="paper: Jia et al. 2023 (5e-4 on CIFAR-10)", group=LOSS),
     **common_knobs(lr=0.01, epochs=5, source="paper: Jia et al. 2023 lr 0.01-0.1, 10 epochs; "
                    "choice: 5 epochs")},
    _retain_pass, _l1_loss))


# ---------------------------------------------------------------------------- SalUn (RL's loss)

def _salun_setup(ctx: Context) -> None:
    """Saliency mask: weights whose forget-loss gradient magnitude is in the top `mask_ratio`."""
    model = ctx.model
    model.zero_grad(set_to_none=True)
    for _ in range(ctx.steps_for(ctx.n_forget)):
        b = ctx.draw("forget")
        F.cross_entropy(model(b.xf), b.yf).backward()
    grads = {n: p.grad.detach().abs() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    flat = torch.cat([g.flatten() for g in grads.values()])
    keep = max(1, int(round(ctx.params["mask_ratio"] * flat.numel())))
    threshold = torch.topk(flat, keep).values.min()
    ctx.state["mask"] = {n: (g >= threshold).to(g.dtype) for n, g in grads.items()}


def _salun_grad_hook(ctx: Context) -> None:
    mask = ctx.state["mask"]
    for name, p in ctx.model.named_parameters():
        if p.grad is not None:
            p.grad.mul_(mask[name]) if name in mask else p.grad.zero_()


register(MethodSpec(
    "salun", "SalUn", "Saliency unlearning: random labels, updating only the weights most "
    "salient to the forget loss", "Fan et al. 2024, SalUn (ICLR)",
    {"mask_ratio": Knob(float, 0.5, "fraction of weights left free to change", 0.0, 1.0,
                        low_open=True, source="paper: Fan et al. 2024 (50 %)",
                        group="Saliency mask"),
     **common_knobs(lr=0.01, epochs=3, source="paper: Fan et al. 2024 lr 0.013, 10 epochs; "
                    "choice: 3 epochs")},
    _paired_pass, _rl_loss, setup=_salun_setup, grad_hook=_salun_grad_hook))


# ---------------------------------------------------------------------------- SCRUB

def _scrub_phases(ctx: Context, epoch: int) -> list[Phase]:
    phases = [Phase("min", "retain", ctx.steps_for(ctx.n_retain))]
    if epoch < ctx.params["max_epochs"]:
        phases.insert(0, Phase("max", "forget", ctx.steps_for(ctx.n_forget)))
    return phases


def _scrub_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    p = ctx.params
    if phase.name == "max":
        kl = distill_kl(ctx.model(b.xf), teacher_logits(ctx.teacher, b.xf), p["temperature"])
        return {"neg_kl_forget": -kl}
    logits = ctx.model(b.xr)
    kl = distill_kl(logits, teacher_logits(ctx.teacher, b.xr), p["temperature"])
    return {"kl_retain": p["alpha"] * kl, "ce_retain": p["gamma"] * F.cross_entropy(logits, b.yr)}


register(MethodSpec(
    "scrub", "SCRUB", "Teacher–student: move away from the original on D_f (max-KL), stay "
    "close on D_r (min-KL + CE)", "Kurmanji et al. 2023, Towards Unbounded Machine Unlearning "
    "(NeurIPS)",
    {"temperature": Knob(float, 4.0, "distillation temperature", 0.0, 100.0, low_open=True,
                         source="paper: kd_T = 4", group=LOSS),
     "alpha": Knob(float, 0.001, "weight of the retain KL", 0.0, 100.0,
                   source="paper: alpha = 0.001", group=LOSS),
     "gamma": Knob(float, 0.99, "weight of the retain cross-entropy", 0.0, 100.0,
                   source="paper: gamma = 0.99", group=LOSS),
     **common_knobs(lr=5e-3, epochs=3, source="paper: code defaults lr 5e-4 for CIFAR "
                    "ResNets; choice: 5e-3 for the few steps of the small models"),
     "max_epochs": Knob(int, 2, "epochs that begin with a max step on D_f", 0, 1000,
                        source="paper: msteps", group=SCHEDULE)},
    _scrub_phases, _scrub_loss))


# ---------------------------------------------------------------------------- Bad Teacher

def _bad_teacher_setup(ctx: Context) -> None:
    bad = ctx.fresh_model()  # an incompetent teacher: random weights
    ctx.state["bad_teacher"] = bad.eval().requires_grad_(False)


def _bad_teacher_loss(ctx: Context, phase: Phase, b: Batch) -> dict[str, torch.Tensor]:
    t = ctx.params["temperature"]
    student = ctx.model(torch.cat([b.xr, b.xf]))
    good = teacher_logits(ctx.teacher, b.xr)
    bad = teacher_logits(ctx.state["bad_teacher"], b.xf)
    n = len(b.xr)
    return {"kl_good_retain": distill_kl(student[:n], good, t) * n / len(student),
            "kl_bad_forget": distill_kl(student[n:], bad, t) * (len(student) - n) / len(student)}


register(MethodSpec(
    "bad_teacher", "Bad Teacher", "Distil a competent teacher on D_r and a random teacher on D_f",
    "Chundawat et al. 2023, Can Bad Teaching Induce Forgetting? (AAAI)",
    {"temperature": Knob(float, 1.0, "distillation temperature", 0.0, 100.0, low_open=True,
                         source="paper: KL temperature 1", group=LOSS),
     **common_knobs(lr=1e-4, epochs=1, optimizer="adam", retain_fraction=0.3,
                    source="paper: Adam lr 1e-4, 1 epoch, 30 % of D_r")},
    _paired_pass, _bad_teacher_loss, setup=_bad_teacher_setup))
