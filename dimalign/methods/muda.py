"""MUDA: Machine Unlearning with Dimensional Alignment (Seo, Kim, Han; WACV 2025).

Forget phase: λ_DA·L_DA + λ_SD·L_SD, with L_DA = −DA(B_f | B_r)² — forget features are pulled
into the retain eigenspace, which is what the retrained model looks like. Recover phase:
CE(B_r) + λ_SD·L_SD. L_SD distils the frozen original on retain batches for stability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dimalign.geometry import Basis, dimensional_alignment, top_basis
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
from dimalign.methods.losses import distill_kl, teacher_logits

PAPER = "Seo, Kim, Han. Revisiting Machine Unlearning with Dimensional Alignment. WACV 2025"

_COMMON = common_knobs(lr=0.01, epochs=4, retain_fraction=0.3,
                       source="choice: the paper's exact lr/epochs are not public")
LOSS, BASIS = "Loss weights", "Retain basis"

KNOBS = {  # in display order, group by group
    "lambda_da": Knob(float, 5.0, "weight of the DA loss in the forget phase", 0.0, 1000.0,
                      source="paper: loss term; choice: value", group=LOSS),
    "lambda_sd": Knob(float, 1.0, "weight of self-distillation (both phases)", 0.0, 1000.0,
                      source="paper: loss term; choice: value", group=LOSS),
    "temperature": Knob(float, 4.0, "self-distillation temperature T", 0.0, 100.0,
                        low_open=True, source="choice", group=LOSS),
    "sd": Knob(str, "kl", "self-distillation target: logits (kl) or features (mse)",
               choices=("kl", "mse"), source="choice (docs/method.md, MUDA)", group=LOSS),
    "epochs": _COMMON["epochs"],
    "ratio_forget": Knob(int, 1, "forget units per cycle (forget:recover ratio)", 1, 100,
                         group=SCHEDULE),
    "ratio_recover": Knob(int, 1, "recover units per cycle (forget:recover ratio)", 0, 100,
                          group=SCHEDULE),
    "alternate": Knob(str, "epoch", "alternation unit", choices=("epoch", "steps"),
                      source="paper: alternating phases; choice: unit", group=SCHEDULE),
    "alternate_steps": Knob(int, 5, "steps per unit when alternate=steps", 1, 100000,
                            group=SCHEDULE),
    "energy": Knob(float, 0.9, "retain eigen-energy that sets k for U_r", 0.0, 1.0,
                   low_open=True, group=BASIS),
    "k": Knob(int, 0, "fixed k for U_r instead of energy (0 = use energy)", 0, 100000,
              group=BASIS, feature_count=True),
    "center": Knob(bool, False, "subtract the retain mean before DA (paper: uncentred)",
                   group=BASIS),
    "basis": Knob(str, "batch", "retain basis source: the current retain batch, or a bank "
                  "of retain features refreshed every bank_refresh steps",
                  choices=("batch", "bank"), group=BASIS),
    "bank_size": Knob(int, 512, "retain samples in the feature bank", 2, 1_000_000,
                      group=BASIS),
    "bank_refresh": Knob(int, 10, "steps between refreshes of the retain feature bank", 1,
                         100000, group=BASIS),
    **{k: knob for k, knob in _COMMON.items() if k != "epochs"},  # the Optimiser group
}


def phases(ctx: Context, epoch: int) -> list[Phase]:
    p = ctx.params
    n_f, n_r = ctx.steps_for(ctx.n_forget), ctx.steps_for(ctx.n_retain)
    cycle = p["ratio_forget"] + p["ratio_recover"]
    if p["alternate"] == "epoch":
        if epoch % cycle < p["ratio_forget"]:
            return [Phase("forget", "both", n_f)]
        return [Phase("recover", "retain", n_r)]
    out, left, unit = [], n_f + n_r, p["alternate_steps"]
    while left > 0:
        for name, source, units in (("forget", "both", p["ratio_forget"]),
                                    ("recover", "retain", p["ratio_recover"])):
            steps = min(left, units * unit)
            if steps > 0:
                out.append(Phase(name, source, steps))
                left -= steps
    return out


def _self_distillation(ctx: Context, x: torch.Tensor, logits: torch.Tensor,
                       feats: torch.Tensor) -> torch.Tensor:
    if ctx.params["sd"] == "mse":
        with torch.no_grad():
            target = ctx.teacher.features(x)
        return F.mse_loss(feats.float(), target.float())
    return distill_kl(logits, teacher_logits(ctx.teacher, x), ctx.params["temperature"])


def _retain_basis(ctx: Context, retain_feats: torch.Tensor) -> Basis:
    p = ctx.params
    k = p["k"] or None
    if p["basis"] == "batch":
        f = retain_feats.detach().float()
        return top_basis(f - f.mean(0, keepdim=True) if p["center"] else f, p["energy"], k)
    # the bank lives in ctx.state as plain tensors and numbers, so checkpoints carry it
    bank = ctx.state.setdefault("bank", {"step": 0})
    if bank["step"] % p["bank_refresh"] == 0:  # refresh the bank from the current model
        feats, need = [], p["bank_size"]
        with torch.no_grad():
            while need > 0:
                x = ctx.draw("retain").xr
                feats.append(ctx.model.features(x).float())
                need -= len(x)
        rows = torch.cat(feats)[: p["bank_size"]]  # (bank_size, C)
        centred = rows - rows.mean(0, keepdim=True) if p["center"] else rows
        basis = top_basis(centred, p["energy"], k)
        bank.update(vectors=basis.vectors, eigenvalues=basis.eigenvalues, k=basis.k)
    bank["step"] += 1
    return Basis(bank["vectors"], bank["eigenvalues"], bank["k"])


def loss(ctx: Context, phase: Phase, batch: Batch) -> dict[str, torch.Tensor]:
    p = ctx.params
    if phase.name == "recover":
        feats = ctx.model.features(batch.xr)
        logits = ctx.model.head(feats)
        return {"ce": F.cross_entropy(logits, batch.yr),
                "sd": p["lambda_sd"] * _self_distillation(ctx, batch.xr, logits, feats)}
    # one forward for both batches, so BatchNorm sees a mixed batch as in training
    feats = ctx.model.features(torch.cat([batch.xf, batch.xr]))
    ff, fr = feats[: len(batch.xf)], feats[len(batch.xf):]
    basis = _retain_basis(ctx, fr)
    da = dimensional_alignment(ff.float(), fr.float().detach(), center=p["center"], basis=basis)
    logits_r = ctx.model.head(fr)
    return {"da": -p["lambda_da"] * da.value ** 2,
            "sd": p["lambda_sd"] * _self_distillation(ctx, batch.xr, logits_r, fr)}


MUDA = register(MethodSpec(
    "muda", "MUDA", "Dimensional Alignment: pull forget features into the retain eigenspace, "
    "alternating with recovery, stabilised by self-distillation", PAPER, KNOBS, phases, loss))
