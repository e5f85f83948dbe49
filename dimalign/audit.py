"""The audit of a finished run: where in the network forgetting happens, what a membership
attacker sees, how fast the forgotten comes back, and what each class gets.

- Layers: each block's output, global-average-pooled, for every model (original, retrained,
  unlearned): DA(forget | retain) and its k, linear CKA to the retrained model and the
  effective rank (Roy & Vetterli) of the retain features. Inner layers are centred; the last
  entry is the penultimate layer, computed by `features.forward_all` itself with the run's
  eval settings, so its DA is the run's `da`.
- Membership: output entropy and max confidence of forget, retain and test samples
  (histograms of all, and a seeded sample of per-sample scores for the threshold attack), and
  the ROC AUC of confidence as a member score, forget vs matched non-members.
- Relearn: fine-tune each model on m forget samples mixed with retain samples for s steps;
  accuracy on the remaining forget samples after each step, and the steps to relearn over
  RELEARN_SUBSETS seeded draws of the m (mean ± sd).
- Classes: per-class test accuracy, the confusion matrix, the backdoor's attack success rate.
- Samples: per forget sample and model, its residual outside the retain top-k eigenspace, its
  margin, confidence and membership score on its label; the unlearned model's scored against
  the retrained models of every cached replicate (`remembered`), most remembered first; on a
  random forget set, each sample's stratum (`strata`) and the scores' mean per stratum.

Tensors in, numbers out; `audit_saved_run` loads a run's models and writes the audit beside
the run as checksummed JSON (the file the Audit page and `dimalign audit` read). Runs in a
worker or the CLI, never in the Streamlit script thread.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dimalign import checked
from dimalign.config import Config, EvalConfig, TrainConfig
from dimalign.data import Experiment, normalise
from dimalign.datasets import DatasetInfo
from dimalign.errors import ConfigError
from dimalign.features import forward_all
from dimalign.film import residuals
from dimalign.geometry import DegenerateFeatures, effective_rank, linear_cka
from dimalign.metrics import alignment, entropy, retain_basis, sample_rows
from dimalign.models import Classifier, blocks
from dimalign.remembered import output_values, ranked, verdicts
from dimalign.run_files import WEIGHTS

MODELS = ("original", "retrained", "unlearned")
SCORES = ("entropy", "confidence")  # per-sample outputs a threshold attacker looks at
RELEARN_THRESHOLD = 0.9  # relearnt: forget accuracy at this fraction of the original model's
RELEARN_EVAL = 2000  # at most this many samples per set are scored after each relearn step
RELEARN_SUBSETS = 5  # seeded draws of the m forget samples; steps to relearn is their mean ± sd
INNER_CENTER = True  # inner layers centred (`layer_eval`); the penultimate keeps eval.center
VERSION = 3  # in the file name: an audit without per-sample scores (v2) is computed again
REFERENCE_MODELS = 32  # retrained models at most (the run's own among them) a sample is scored by
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class AuditSettings:
    relearn_samples: int = 0  # m: forget samples the attacker fine-tunes on; 0 = 10 % of D_f
    relearn_steps: int = 50  # s: fine-tuning steps
    bins: int = 30  # histogram bins of each score
    score_samples: int = 1000  # per split, per-sample scores kept for the threshold attack

    def samples(self, n_forget: int) -> int:
        """m for a forget set of `n_forget` samples: the setting, or 10 % of D_f, at least 5."""
        return self.relearn_samples or max(5, round(0.1 * n_forget))

    def check(self, n_forget: int) -> AuditSettings:
        """ConfigError (one line) for settings this forget set cannot take."""
        if not 0 <= self.relearn_samples < n_forget:
            raise ConfigError("relearn_samples", f"must lie in 1..{n_forget - 1} (the forget "
                              f"set has {n_forget} samples; some must stay to score), or 0 "
                              f"for 10 % of them, got {self.relearn_samples}")
        if self.samples(n_forget) >= n_forget:  # only the automatic m gets here
            fits = (f"; set relearn_samples to 1..{n_forget - 1}" if n_forget > 1 else
                    ": too few to fine-tune on some and score the rest")
            raise ConfigError("relearn_samples", f"the automatic m (10 % of the forget set, at "
                              f"least 5) leaves none of its {n_forget} samples to score{fits}")
        if not 1 <= self.relearn_steps <= 1000:
            raise ConfigError("relearn_steps", f"must lie in 1..1000, got {self.relearn_steps}")
        if not 2 <= self.bins <= 200:
            raise ConfigError("bins", f"must lie in 2..200, got {self.bins}")
        if not 10 <= self.score_samples <= 100_000:
            raise ConfigError("score_samples", f"must lie in 10..100000, got "
                              f"{self.score_samples}")
        return self

    def file_name(self) -> str:
        return f"audit-v{VERSION}-m{self.relearn_samples or 'auto'}-s{self.relearn_steps}.json"


def audit_path(run_folder: Path, settings: AuditSettings) -> Path:
    return Path(run_folder) / settings.file_name()


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _defined(measure) -> float | None:
    try:
        return _finite(measure())
    except DegenerateFeatures:
        return None


# ---------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerOutputs:
    """One model on one set of images: logits and each layer's pooled features."""

    logits: torch.Tensor  # (N, K)
    layers: dict[str, torch.Tensor]  # name -> (N, C_layer), input to output; last: penultimate


def layer_outputs(model: Classifier, x: torch.Tensor, info: DatasetInfo) -> LayerOutputs:
    """Logits and every block's global-average-pooled output (blocks whose output is not a
    4-D feature map are left out), then "penultimate": the features exactly as
    `features.forward_all` computes them, from the same pass."""
    taps = blocks(model)
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name, _ in taps}

    def hook(name: str):
        def keep(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                pooled[name].append(output.float().mean((2, 3)))  # copied back once, below
        return keep

    handles = [module.register_forward_hook(hook(name)) for name, module in taps]
    try:
        logits, penultimate = forward_all(model, x, info)
    finally:
        for handle in handles:
            handle.remove()
    layers = {name: torch.cat(parts).cpu() for name, parts in pooled.items() if parts}
    return LayerOutputs(logits, {**layers, PENULTIMATE: penultimate})


PENULTIMATE = "penultimate"


def fold_last_block(outputs: list[LayerOutputs]) -> list[LayerOutputs]:
    """The last block, pooled, is the penultimate layer when only the global pool follows it
    (the small CNN, ResNet-18, torchvision ResNets): then it is listed once, as "penultimate
    (NAME)". Decided over all `outputs` together, so every model gets the same layers."""
    names = list(outputs[0].layers)
    if len(names) < 2:
        return outputs
    last = names[-2]

    def same(o: LayerOutputs) -> bool:
        a, b = o.layers[last], o.layers[PENULTIMATE]
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-2, atol=1e-3)

    if not all(same(o) for o in outputs):
        return outputs
    return [LayerOutputs(o.logits, {**{k: v for k, v in o.layers.items()
                                       if k not in (last, PENULTIMATE)},
                                    f"{PENULTIMATE} ({last})": o.layers[PENULTIMATE]})
            for o in outputs]


def model_layers(models: dict[str, Classifier], exp: Experiment,
                 say: ProgressFn | None = None
                 ) -> tuple[dict[str, LayerOutputs], dict[str, LayerOutputs]]:
    """Each model's `layer_outputs` on the training and on the test images, the last block
    folded (`fold_last_block`) for all of them alike."""
    train, test = {}, {}
    for i, (m, model) in enumerate(models.items()):
        if say is not None:
            say(0.4 * i / len(models), f"layers: {m}")
        train[m] = layer_outputs(model, exp.x_train, exp.info)
        test[m] = layer_outputs(model, exp.x_test, exp.info)
    folded = fold_last_block([*train.values(), *test.values()])
    return (dict(zip(train, folded[:len(train)], strict=True)),
            dict(zip(test, folded[len(train):], strict=True)))


def layer_eval(ev: EvalConfig, penultimate: bool, inner_center: bool = True) -> EvalConfig:
    """The eval settings of one layer: the run's at the penultimate layer (the paper's DA),
    centred at inner layers. Their ReLU outputs share a large positive mean that uncentred
    takes as the one retain direction: k = 1 and DA ≈ 0.99 for every model (issue 27)."""
    return ev if penultimate or not inner_center else dataclasses.replace(ev, center=True)


def _da(feats: torch.Tensor, forget: torch.Tensor, retain: torch.Tensor,
        ev: EvalConfig) -> tuple[float | None, int | None]:
    """DA(forget | retain) and its k; (None, None) where the layer leaves it undefined."""
    try:
        value, basis = alignment(feats[forget], feats[retain], ev)
    except DegenerateFeatures:
        return None, None
    return _finite(value), basis.k


def _layer_row(feats: torch.Tensor, mine: torch.Tensor, reference: torch.Tensor | None,
               exp: Experiment, ev: EvalConfig) -> dict:
    """One model at one layer: `feats` on the training set, `mine` and `reference` (the
    retrained model's) on the samples CKA compares."""
    da, k = _da(feats, exp.forget_idx, exp.retain_idx, ev)
    return {"da": da, "da_k": k,
            "cka_retrained": None if reference is None else _defined(
                lambda: linear_cka(mine, reference)),
            "effective_rank": _defined(lambda: effective_rank(feats[exp.retain_idx],
                                                              ev.center))}


def layer_geometry(train: dict[str, LayerOutputs], test: dict[str, LayerOutputs],
                   exp: Experiment, ev: EvalConfig, seed: int,
                   inner_center: bool = INNER_CENTER) -> list[dict]:
    """Per layer (input to output) and model: DA(forget | retain) and its k, linear CKA to the
    retrained model (on the forget + test samples the run's CKA uses) and the effective rank
    of the retain features, with `layer_eval`'s settings (each layer's "center" says which).
    Undefined values (a collapsed layer) are None."""
    forget = exp.forget_idx
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(sample_rows(len(forget) + len(exp.y_test), ev.cka_samples, rng))
    names = list(next(iter(train.values())).layers)
    out = []
    for i, layer in enumerate(names):
        lev = layer_eval(ev, i == len(names) - 1, inner_center)
        shared = {m: torch.cat([train[m].layers[layer][forget], test[m].layers[layer]])[rows]
                  for m in train}
        models = {m: _layer_row(train[m].layers[layer], shared[m], shared.get("retrained"),
                                exp, lev) for m in train}
        out.append({"name": layer, "dim": int(train["retrained"].layers[layer].shape[1]),
                    "center": lev.center, "models": models})
    return out


# ---------------------------------------------------------------------------- membership


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Largest softmax probability per sample (N,)."""
    return torch.softmax(logits.double(), dim=1).max(1).values


def scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"entropy": entropy(logits), "confidence": confidence(logits)}


def score_range(score: str, num_classes: int) -> tuple[float, float]:
    """Where a score lives: entropy in [0, log K], confidence in [1/K, 1]."""
    return (0.0, math.log(num_classes)) if score == "entropy" else (1.0 / num_classes, 1.0)


def histograms(by_split: dict[str, torch.Tensor], low: float, high: float,
               bins: int) -> dict[str, list]:
    """Counts per split over the same `bins` bins of [low, high] (`edges`: bins + 1)."""
    edges = np.linspace(low, high, bins + 1)
    out: dict[str, list] = {"edges": [round(float(e), 6) for e in edges]}
    for split, values in by_split.items():
        v = values.double().numpy().clip(low, high)  # rounding past the ends counts at them
        out[split] = np.histogram(v, bins=edges)[0].tolist()
    return out


def membership_auc(members: torch.Tensor, nonmembers: torch.Tensor) -> float | None:
    """ROC AUC of a member score (higher = member) separating members from non-members:
    0.5 when the attacker sees no difference. None when either side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(members) == 0 or len(nonmembers) == 0:
        return None
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    s = torch.cat([members, nonmembers]).double().numpy()
    if not np.isfinite(s).all():  # a diverged model
        return None
    return float(roc_auc_score(y, s))


def threshold_attack(members: list[float], nonmembers: list[float], threshold: float,
                     higher_is_member: bool = True) -> tuple[float | None, float | None]:
    """(TPR, FPR) of the attack that calls a sample a member when its score is at least
    `threshold` (at most, for `higher_is_member=False`, e.g. entropy)."""
    def rate(values: list[float]) -> float | None:
        if not values:
            return None
        v = np.asarray(values, dtype=float)
        return float(np.mean(v >= threshold if higher_is_member else v <= threshold))

    return rate(members), rate(nonmembers)


def attack_table(audit: dict, score: str, threshold: float) -> list[dict]:
    """Per model of a saved audit: the threshold attack's TPR and FPR on its sampled scores
    (forget vs non-members), their difference, the ROC AUC and the run's headline `mia`."""
    rows = []
    for model, entry in audit["mia"].items():
        tpr, fpr = threshold_attack(entry["scores"]["forget"][score],
                                    entry["scores"]["nonmembers"][score], threshold,
                                    higher_is_member=score == "confidence")
        rows.append({"model": model, "TPR (forget called member)": tpr,
                     "FPR (non-members called member)": fpr,
                     "TPR − FPR": None if tpr is None or fpr is None else tpr - fpr,
                     "ROC AUC": entry["auc"], "mia (SVC, headline)": entry["mia"]})
    return rows


def nonmember_rows(exp: Experiment) -> tuple[str, str, torch.Tensor]:
    """The non-members a forget sample is told apart from, as (description, output, rows):
    test samples of the forgotten classes (class scenario: the same distribution as D_f),
    the stamped test samples (backdoor), else the test set."""
    if exp.test_forgotten.any():
        return ("test samples of the forgotten classes", "test",
                exp.test_forgotten.nonzero().squeeze(1))
    if exp.x_trigger is not None:
        return ("test samples stamped with the trigger", "trigger",
                torch.arange(len(exp.x_trigger)))
    return "test samples", "test", torch.arange(len(exp.y_test))


def membership(logits: dict[str, torch.Tensor], exp: Experiment, settings: AuditSettings,
               seed: int) -> dict:
    """One model's membership evidence from its logits on "train", "test" and (backdoor)
    "trigger": histograms of each score, sampled per-sample scores, the ROC AUC."""
    _, source, rows = nonmember_rows(exp)
    split = {"forget": logits["train"][exp.forget_idx], "retain": logits["train"][exp.retain_idx],
             "test": logits["test"], "nonmembers": logits[source][rows]}
    per = {s: scores(v) for s, v in split.items()}
    k = exp.info.num_classes
    hist = {score: histograms({s: per[s][score] for s in ("forget", "retain", "test")},
                              *score_range(score, k), settings.bins) for score in SCORES}
    kept = {}
    for i, (s, values) in enumerate(per.items()):
        pick = torch.from_numpy(sample_rows(len(values["entropy"]), settings.score_samples,
                                            np.random.default_rng(seed + i)))
        kept[s] = {score: [round(float(v), 6) for v in values[score][pick]] for score in SCORES}
    return {"auc": membership_auc(per["forget"]["confidence"], per["nonmembers"]["confidence"]),
            "histograms": hist, "scores": kept}


# ---------------------------------------------------------------------------- relearn attack


def batch_split(n_fit: int, n_pool: int, batch_size: int) -> tuple[int, int]:
    """(forget, retain) samples in each relearn batch: up to half the batch of the m forget
    samples (at least one), the rest retain samples."""
    take = max(1, min(n_fit, batch_size // 2))
    return take, min(batch_size - take, n_pool)


def mixed_batches(n_fit: int, n_pool: int, batch_size: int, steps: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Positions of each relearn step's batch as (in the fit rows, in the pool rows): the fit
    samples in a seeded cycling order, the pool (D_r) drawn afresh each step. Forget samples
    alone (one class, in a class scenario) teach "everything is that class": on digits one
    step of them took the original's forget accuracy from 0.99 to 0.0 on some draws
    (BatchNorm in train mode); with BatchNorm frozen, kept-class test accuracy fell to 0.
    Retain samples beside them probe the model instead of wrecking it (docs/method.md)."""
    take, fill = batch_split(n_fit, n_pool, batch_size)
    gen = torch.Generator().manual_seed(seed)
    order, at, out = torch.randperm(n_fit, generator=gen), 0, []
    for _ in range(steps):
        if at + take > n_fit:
            order, at = torch.randperm(n_fit, generator=gen), 0
        out.append((order[at:at + take], torch.randperm(n_pool, generator=gen)[:fill]))
        at += take
    return out


def _scorer(net: Classifier, eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
            info: DatasetInfo) -> Callable[[int], dict]:
    """step -> {"step", "acc_<set>": ...}: `net`'s accuracy on each set, in one pass."""
    x_all = torch.cat([x for x, _ in eval_sets.values()])
    ends = np.cumsum([0, *(len(y) for _, y in eval_sets.values())]).tolist()

    def score(step: int) -> dict:
        hits = forward_all(net, x_all, info)[0].argmax(1)
        point: dict = {"step": step}
        for i, (name, (_, y)) in enumerate(eval_sets.items()):
            part = hits[ends[i]:ends[i + 1]]
            point[f"acc_{name}"] = (part == y).double().mean().item() if len(y) else None
        return point

    return score


def _fit_step(net: Classifier, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              info: DatasetInfo) -> None:
    """One SGD step on uint8 images `x`, BatchNorm in train mode as in training."""
    device = next(net.parameters()).device
    net.train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = torch.nn.functional.cross_entropy(net(normalise(x.to(device), info)),
                                                 y.to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def relearn(model: Classifier, x: torch.Tensor, y: torch.Tensor, fit: torch.Tensor,
            pool: torch.Tensor, eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
            info: DatasetInfo, tc: TrainConfig, steps: int, seed: int,
            until: float | None = None) -> list[dict]:
    """Fine-tune a copy of `model` on `mixed_batches` of rows `fit` (the m forget samples) and
    `pool` (D_r) of the training images `x` (uint8) and labels `y`, for `steps` steps with the
    training's SGD (its lr, held constant; Nesterov momentum; weight decay), no augmentation;
    the accuracy on each of `eval_sets` before the first step (step 0) and after each.
    `until`: stop once acc_forget reaches it. Returns [{"step": 0, "acc_<set>": ...}, ...]."""
    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=tc.lr, momentum=tc.momentum,
                          weight_decay=tc.weight_decay, nesterov=tc.momentum > 0)
    score = _scorer(net, eval_sets, info)
    curve = [score(0)]
    for step, (i, j) in enumerate(mixed_batches(len(fit), len(pool), tc.batch_size, steps,
                                                seed), start=1):
        if steps_to_relearn(curve[-1:], "acc_forget", until) is not None:
            break
        rows = torch.cat([fit[i], pool[j]])
        _fit_step(net, opt, x[rows], y[rows], info)
        curve.append(score(step))
    return curve


def format_steps(entry: dict) -> str:
    """A model's steps to relearn over the draws as "mean ± sd" ("never" when no draw did)."""
    if entry["steps_mean"] is None:
        return "never"
    sd = "" if entry["steps_sd"] is None else f" ± {entry['steps_sd']:.1f}"
    return f"{entry['steps_mean']:.1f}{sd}"


def relearn_table(audit: dict) -> list[dict]:
    """Per model of a saved audit: steps to relearn on the first draw (its curve), their mean
    ± sd over every draw, and how many draws relearnt within s steps."""
    n = audit["settings"]["relearn_subsets"]
    return [{"model": m, "steps to relearn (draw 1)": e["steps_to_relearn"],
             f"mean ± sd ({n} draws)": format_steps(e), "draws relearnt": f"{e['relearnt']}/{n}"}
            for m, e in audit["relearn"].items()]


def steps_to_relearn(curve: list[dict], key: str, target: float | None) -> int | None:
    """The first step whose `key` reaches `target`; None when none does (or no target)."""
    if target is None:
        return None
    return next((p["step"] for p in curve if p[key] is not None and p[key] >= target - 1e-12),
                None)


def relearn_sets(exp: Experiment, settings: AuditSettings, seed: int
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """The m forget rows to fine-tune on (seeded), the rows each curve scores (the remaining
    forget samples; the test samples of the forgotten classes, or the test set when the
    scenario forgets no class), capped at RELEARN_EVAL, and what the second curve is."""
    gen = torch.Generator().manual_seed(seed)
    forget = exp.forget_idx[torch.randperm(len(exp.forget_idx), generator=gen)]
    m = settings.samples(len(forget))
    fit, rest = forget[:m].sort().values, forget[m:]
    if exp.test_forgotten.any():
        test, name = exp.test_forgotten.nonzero().squeeze(1), "test_forgotten"
    else:
        test, name = torch.arange(len(exp.y_test)), "test"
    cap = lambda rows: rows[torch.from_numpy(sample_rows(len(rows), RELEARN_EVAL, np.random.default_rng(seed)))]  # noqa
    return fit, {"forget": cap(rest.sort().values), name: cap(test)}, name


def _target(original: Classifier | None, forget: tuple[torch.Tensor, torch.Tensor],
            info: DatasetInfo) -> float | None:
    """Relearnt: forget accuracy at RELEARN_THRESHOLD × the original model's (None without
    an original)."""
    if original is None or not len(forget[1]):
        return None
    hits = forward_all(original, forget[0], info)[0].argmax(1) == forget[1]
    return RELEARN_THRESHOLD * hits.double().mean().item()


def relearn_draw(models: dict[str, Classifier], exp: Experiment, cfg: Config,
                 settings: AuditSettings, index: int) -> dict:
    """Draw `index` (seed cfg.seed + index) of the relearn attack on every model: per model its
    curve and steps to relearn, with the draw's target and rows. Draw 0 scores both sets for
    all s steps (the curves the page draws); the others only the forget set, each model until
    it relearns (the original at step 0): their steps are all they add."""
    seed = cfg.seed + index
    fit, sets, second = relearn_sets(exp, settings, seed)
    scored = {"forget": (exp.x_train[sets["forget"]], exp.y_train[sets["forget"]])}
    if index == 0:
        scored[second] = (exp.x_test[sets[second]], exp.y_test[sets[second]])
    target = _target(models.get("original"), scored["forget"], exp.info)
    curves = {m: relearn(model, exp.x_train, exp.y_train, fit, exp.retain_idx, scored,
                         exp.info, cfg.train, settings.relearn_steps, seed,
                         until=None if index == 0 else target)
              for m, model in models.items()}
    return {"seed": seed, "fit": fit, "sets": sets, "second": second, "target": target,
            "curves": curves,
            "steps": {m: steps_to_relearn(c, "acc_forget", target) for m, c in curves.items()}}


def steps_summary(steps: list[int | None]) -> dict:
    """Steps to relearn over the draws: each draw's, how many relearnt within s steps, and the
    mean and sample sd (n − 1) over those (None where too few)."""
    done = [s for s in steps if s is not None]
    return {"subsets": steps, "relearnt": len(done),
            "steps_mean": float(np.mean(done)) if done else None,
            "steps_sd": float(np.std(done, ddof=1)) if len(done) > 1 else None}


def relearn_attack(models: dict[str, Classifier], exp: Experiment, cfg: Config,
                   settings: AuditSettings, say: ProgressFn) -> tuple[dict, dict]:
    """The relearn attack over RELEARN_SUBSETS seeded draws of the m forget samples (one
    without an original model to set the target). Returns (per model: draw 0's curve and
    steps, and `steps_summary` over every draw; the settings it used)."""
    count = RELEARN_SUBSETS if "original" in models else 1
    draws = []
    for index in range(count):
        say(0.5 + 0.45 * index / count, f"relearn: draw {index + 1} of {count}")
        draws.append(relearn_draw(models, exp, cfg, settings, index))
    first, tc = draws[0], cfg.train
    out = {m: {"steps_to_relearn": first["steps"][m], "curve": first["curves"][m],
               **steps_summary([d["steps"][m] for d in draws])} for m in models}
    take, fill = batch_split(len(first["fit"]), len(exp.retain_idx), tc.batch_size)
    return out, {
        "m": len(first["fit"]), "lr": tc.lr, "momentum": tc.momentum,
        "nesterov": tc.momentum > 0, "weight_decay": tc.weight_decay,
        "relearn_batch": {"forget": take, "retain": fill}, "relearn_subsets": count,
        "relearn_seeds": [d["seed"] for d in draws],
        "relearn_threshold": first["target"],
        "relearn_thresholds": [d["target"] for d in draws],
        "relearn_second": first["second"],
        "relearn_second_title": ("test samples of the forgotten classes"
                                 if first["second"] == "test_forgotten" else
                                 "test samples (this scenario forgets no class)"),
        "relearn_eval_samples": {k: len(v) for k, v in first["sets"].items()}}


# ---------------------------------------------------------------------------- samples


SAMPLE_ROWS = 100  # the most remembered samples a table shows (the JSON has every scored one)


def scored_rows(exp: Experiment, seed: int) -> torch.Tensor:
    """The training rows of the forget samples scored one by one: the at most FORGET_SCORED
    seeded ones whose confidences the run's result keeps (`runner.forget_confidence`)."""
    from dimalign.runner import FORGET_SCORED

    forget = exp.forget_idx
    return forget[torch.from_numpy(sample_rows(len(forget), FORGET_SCORED,
                                               np.random.default_rng(seed)))]


def model_values(logits: torch.Tensor, feats: torch.Tensor, exp: Experiment,
                 rows: torch.Tensor, ev: EvalConfig) -> dict[str, np.ndarray]:
    """One model's values of the training `rows`: the residual of its penultimate features
    `feats` outside its retain top-k eigenspace (k as its DA's, by the eval settings; NaN
    where the features span nothing), and `remembered.output_values` of its `logits` on the
    labels the samples trained under."""
    retain, feats = exp.retain_idx, feats.double()
    try:
        k = retain_basis(feats[retain], ev).k
        residual = residuals(feats, retain, k, ev.center)[rows].numpy()
    except DegenerateFeatures:
        residual = np.full(len(rows), np.nan)
    return {"residual": residual,
            **output_values(logits[rows].double().numpy(), exp.y_train[rows].numpy())}


def replicate_retrained(cfg: Config, device: torch.device) -> dict[int, Classifier]:
    """The cached retrained models of the run's other replicates (the same setting with
    another `replicate`: the same split and forget set), lowest replicate first, at most
    REFERENCE_MODELS − 1; one damaged or set aside meanwhile is skipped."""
    from dimalign.config import REPLICATE_LIMIT
    from dimalign.train import cache_key, cache_path, load_checkpoint

    # one key varied by replicate, as cache_key keys them (replicate 0 without it): a config
    # per replicate would scan an imagefolder's files each time
    base = {k: v for k, v in cache_key(cfg, "retrained").items() if k != "replicate"}
    found: dict[int, Classifier] = {}
    for r in range(REPLICATE_LIMIT):
        path = cache_path({**base, "replicate": r} if r else base)
        if r == cfg.replicate or not os.path.exists(f"{path[:-3]}.json"):  # written last
            continue
        try:
            found[r] = load_checkpoint(cfg, path, device)  # every replicate: one architecture
        except (FileNotFoundError, checked.DamagedFile):
            continue
        if len(found) == REFERENCE_MODELS - 1:
            break
    return found


def sample_scores(train: dict[str, LayerOutputs], exp: Experiment, cfg: Config,
                  references: Mapping[int, Classifier]) -> tuple[list[dict], dict]:
    """Every scored forget sample's values under each model (penultimate features, the run's
    eval settings) and the unlearned model's verdict against the retrained models, the run's
    own and `references` (other replicates'), most remembered first; and how it was scored."""
    rows = scored_rows(exp, cfg.seed)
    values = {m: model_values(o.logits, list(o.layers.values())[-1], exp, rows, cfg.eval)
              for m, o in train.items()}
    others = [model_values(*forward_all(model, exp.x_train, exp.info), exp, rows, cfg.eval)
              for model in references.values()]
    scored = verdicts(values, others)
    how = {"kind": scored["kind"], "retrained_models": scored["retrained_models"],
           "replicates": sorted([cfg.replicate, *references]), "scored": len(rows),
           "forget": len(exp.forget_idx),
           "sd": {q: scored[q]["sd"] for q in ("residual", "membership")
                  if "sd" in scored.get(q, {})}}
    samples = ranked(rows.tolist(), exp.y_train[rows].tolist(), values, scored)
    if exp.strata is not None:  # a random forget set: each sample's stratum, scores per stratum
        how["strata"] = strata_scores(samples, exp.strata)
    return samples, how


def strata_scores(samples: list[dict], strata: torch.Tensor) -> dict:
    """Each sample's `stratum` (easy, medium, hard: `dimalign.strata`) set in place; per
    stratum, its scored samples and the mean of each score over them (None where none)."""
    from dimalign.strata import STRATA

    out = {}
    for s in samples:
        s["stratum"] = STRATA[int(strata[s["id"]])]
    for name in STRATA:
        mine = [s["scores"] for s in samples if s["stratum"] == name]
        row = {"samples": len(mine)}
        for q in ("residual", "membership"):
            values = [scores[q] for scores in mine if scores[q] is not None]
            row[f"mean_{q}"] = float(np.mean(values)) if values else None
        out[name] = row
    return out


def verdict_text(how: dict) -> str:
    """What a saved audit's sample scores are, in a sentence."""
    n = how["retrained_models"]
    if how["kind"] == "replicates":
        return (f"score: z of the unlearned model's residual against the {n} retrained "
                f"models of replicates {', '.join(map(str, how['replicates']))}, positive "
                "toward the original model; above 2: outside what retraining gives")
    if how["kind"] == "single":
        return ("score (one run, a weaker verdict): the unlearned model's residual minus the "
                "retrained model's, positive toward the original model; no retraining spread "
                "to judge it by (run replicates for one)")
    return "no unlearned model: no score"


def sample_table(audit: dict, top: int = SAMPLE_ROWS) -> list[dict]:
    """The `top` most remembered samples of a saved audit as table rows: the sample, its
    label, its score (and percentile with replicates), the membership score's verdict, each
    model's residual and confidence, and a random forget set's stratum."""
    replicates = audit["sample_verdict"]["kind"] == "replicates"
    rows = []
    for s in audit["samples"][:top]:
        row = {"sample": s["id"], "label": s["label"], "score": s["score"]}
        if replicates:
            row["percentile"] = s["percentile"]
        row["membership score"] = s["scores"]["membership"]
        for key in ("residual", "confidence"):
            row.update({f"{key} ({m})": v[key] for m, v in s["models"].items()})
        if "stratum" in s:  # a random forget set's (dimalign/strata.py)
            row["stratum"] = s["stratum"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- classes


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int
                     ) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    predicted = logits.argmax(1)
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    counts = confusion.sum(1)
    return [float(confusion[c, c] / counts[c]) if counts[c] else None
            for c in range(len(counts))]


def classwise(logits: dict[str, dict[str, torch.Tensor]], exp: Experiment,
              target: int | None) -> dict:
    """Per model: per-class test accuracy and the test confusion matrix; the forgotten
    classes; backdoor (`target` set): the attack success rate, the fraction of stamped test
    samples of other classes sent to the target class."""
    k = exp.info.num_classes
    out: dict = {"classes": list(range(k)), "forgotten": exp.forgotten_classes,
                 "counts": torch.bincount(exp.y_test, minlength=k).tolist(), "models": {}}
    for m, lg in logits.items():
        conf = confusion_matrix(lg["test"], exp.y_test, k)
        out["models"][m] = {"accuracy": per_class_accuracy(conf), "confusion": conf.tolist()}
        if target is not None and "trigger" in lg:
            out["models"][m]["asr"] = (lg["trigger"].argmax(1) == target).double().mean().item()
    if target is not None:
        out["target"] = target
    return out


# ---------------------------------------------------------------------------- the whole audit


def audit(models: dict[str, Classifier], exp: Experiment, cfg: Config,
          settings: AuditSettings, headline: dict[str, float | None] | None = None,
          progress: ProgressFn | None = None,
          references: Mapping[int, Classifier] | None = None) -> dict:
    """Every panel of the audit for `models` (original, retrained and, for an unlearning run,
    unlearned). `headline`: the run's own SVC-based `mia` per model, shown with the AUC;
    `references`: other replicates' retrained models, which the per-sample scores use."""
    say = progress or (lambda fraction, phase: None)
    settings.check(int(exp.forget.sum()))
    start = time.perf_counter()
    models = {m: models[m] for m in MODELS if m in models}
    train, test = model_layers(models, exp, say)
    logits = {m: {"train": train[m].logits, "test": test[m].logits} for m in models}
    if exp.x_trigger is not None:
        for m, model in models.items():
            logits[m]["trigger"] = forward_all(model, exp.x_trigger, exp.info)[0]
    layers = layer_geometry(train, test, exp, cfg.eval, cfg.seed)
    say(0.45, "membership")
    description, _, _ = nonmember_rows(exp)
    mia = {m: {**membership(logits[m], exp, settings, cfg.seed),
               "mia": (headline or {}).get(m)} for m in models}
    say(0.47, "per-sample scores")
    samples, how = sample_scores(train, exp, cfg, references or {})
    relearnt, relearn_used = relearn_attack(models, exp, cfg, settings, say)
    say(0.97, "classes")
    classes = classwise(logits, exp, cfg.scenario.target
                        if cfg.scenario.kind == "backdoor" else None)
    return {
        "layers": layers,
        "relearn": relearnt,
        "mia": mia,
        "classwise": classes,
        "samples": samples,
        "sample_verdict": how,
        "settings": {
            **asdict(settings), "seed": cfg.seed, "eval": asdict(cfg.eval),
            "inner_center": INNER_CENTER, **relearn_used,
            "nonmembers": description, "scenario": cfg.scenario.kind,
        },
        "seconds": round(time.perf_counter() - start, 3),
        "device": str(next(next(iter(models.values())).parameters()).device),
    }


SECTIONS = ("layers", "relearn", "mia", "classwise", "samples", "sample_verdict",
            "settings")


def load_audit(path: Path) -> dict:
    """A saved audit, checked: DamagedFile (the file set aside) when it is damaged or is not
    an audit."""
    audit = checked.load_json(path)
    if not (isinstance(audit, dict) and set(SECTIONS) <= set(audit)):
        raise checked.damaged(path, "not an audit dimalign writes")
    return audit


def run_models(run_folder: Path, result: dict
               ) -> tuple[Config, dict[str, Classifier], Experiment]:
    """A finished run's config, models (the cached baselines and, if it unlearned, its saved
    weights) and experiment, from its saved `result`. RuntimeError (one line) when the
    baselines it was evaluated with are gone or were trained again since."""
    from dimalign.config import config_from_dict
    from dimalign.train import cached_meta, get_baselines, model_from_state

    cfg = config_from_dict(result["config"])
    if not all(cached_meta(cfg, role) for role in ("original", "retrained")):
        raise RuntimeError("this run's baselines are no longer cached; run it again")
    b = get_baselines(cfg)
    if result.get("checkpoints") != b.checkpoints:
        raise RuntimeError("this run's baselines were trained again since it ran, so its "
                           "numbers would not match; run it again")
    models: dict[str, Classifier] = {"original": b.original, "retrained": b.retrained}
    weights = Path(run_folder) / WEIGHTS
    if "unlearned" in result["models"]:
        models["unlearned"] = model_from_state(cfg, checked.load_torch(weights), b.device)
    return cfg, models, b.experiment


def audit_saved_run(run_folder: Path, settings: AuditSettings,
                    progress: ProgressFn | None = None) -> tuple[Path, dict]:
    """The audit of a finished run, written beside it (the file the Audit page reads).
    Returns (its path, the audit)."""
    from dimalign.runner import finite, load_result

    result = load_result(Path(run_folder))
    settings.check(int(result["data"]["forget"]))  # before any model is loaded
    cfg, models, exp = run_models(run_folder, result)
    headline = {m: row.get("mia") for m, row in result["models"].items()}
    references = replicate_retrained(cfg, next(models["retrained"].parameters()).device)
    bundle = finite(audit(models, exp, cfg, settings, headline, progress, references))
    path = audit_path(run_folder, settings)
    checked.save_json(bundle, path)
    return path, bundle
