"""The audit of a finished run: where in the network forgetting happens, what a membership
attacker sees, how fast the forgotten comes back, and what each class gets.

- Layers: each block's output, global-average-pooled, for every model (original, retrained,
  unlearned): DA(forget | retain) with the run's eval settings, linear CKA to the retrained
  model and the effective rank of the retain features. The last entry is the penultimate
  layer, computed by `features.forward_all` itself, so its DA is the run's `da`.
- Membership: output entropy and max confidence of forget, retain and test samples
  (histograms of all, and a seeded sample of per-sample scores for the threshold attack), and
  the ROC AUC of confidence as a member score, forget vs matched non-members.
- Relearn: fine-tune each model on m forget samples for s steps; accuracy on the remaining
  forget samples after each step.
- Classes: per-class test accuracy, the confusion matrix, the backdoor's attack success rate.

Tensors in, numbers out; `audit_saved_run` loads a run's models and writes the audit beside
the run as checksummed JSON (the file the Audit page and `dimalign audit` read). Runs in a
worker or the CLI, never in the Streamlit script thread.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dimalign import checked
from dimalign.config import Config, EvalConfig
from dimalign.data import Experiment, normalise
from dimalign.datasets import DatasetInfo
from dimalign.errors import ConfigError
from dimalign.features import forward_all
from dimalign.geometry import DegenerateFeatures, eigenspectrum, linear_cka
from dimalign.metrics import alignment, entropy, sample_rows
from dimalign.models import Classifier, blocks
from dimalign.run_files import WEIGHTS

MODELS = ("original", "retrained", "unlearned")
SCORES = ("entropy", "confidence")  # per-sample outputs a threshold attacker looks at
RELEARN_THRESHOLD = 0.9  # relearnt: forget accuracy at this fraction of the original model's
RELEARN_EVAL = 2000  # at most this many samples per set are scored after each relearn step
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
        return f"audit-m{self.relearn_samples or 'auto'}-s{self.relearn_steps}.json"


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


def layer_geometry(train: dict[str, LayerOutputs], test: dict[str, LayerOutputs],
                   exp: Experiment, ev: EvalConfig, seed: int) -> list[dict]:
    """Per layer (input to output) and model: DA(forget | retain) with the eval settings,
    linear CKA to the retrained model (on the forget + test samples the run's CKA uses) and
    the effective rank of the retain features. Undefined values (a collapsed layer) are None."""
    forget, retain = exp.forget_idx, exp.retain_idx
    n_test = len(exp.y_test)
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(sample_rows(len(forget) + n_test, ev.cka_samples, rng))
    names = list(next(iter(train.values())).layers)
    out = []
    for layer in names:
        shared = {m: torch.cat([train[m].layers[layer][forget], test[m].layers[layer]])[rows]
                  for m in train}
        reference = shared.get("retrained")
        models = {}
        for m in train:
            feats, mine = train[m].layers[layer], shared[m]
            models[m] = {
                "da": _defined(lambda f=feats: alignment(f[forget], f[retain], ev)[0]),
                "cka_retrained": None if reference is None else _defined(
                    lambda a=mine, b=reference: linear_cka(a, b)),
                "effective_rank": _defined(lambda f=feats: eigenspectrum(f[retain])
                                           .effective_rank),
            }
        out.append({"name": layer, "dim": int(train["retrained"].layers[layer].shape[1]),
                    "models": models})
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


def relearn(model: Classifier, x_fit: torch.Tensor, y_fit: torch.Tensor,
            eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]], info: DatasetInfo,
            steps: int, lr: float, momentum: float, weight_decay: float, batch_size: int,
            seed: int) -> list[dict]:
    """Fine-tune a copy of `model` on (x_fit, y_fit) (uint8 images, labels) with SGD for
    `steps` steps of at most `batch_size` samples (in a seeded order, no augmentation); after
    each step (and before the first: step 0) the accuracy on each of `eval_sets`. Returns
    [{"step": 0, "acc_<set>": ...}, ...], s + 1 points."""
    device = next(model.parameters()).device
    net = copy.deepcopy(model)
    cuda = device.type == "cuda"
    x_fit, y_fit = x_fit.to(device), y_fit.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay, nesterov=momentum > 0)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()

    x_all = torch.cat([x for x, _ in eval_sets.values()])  # one pass scores every set
    ends = np.cumsum([0, *(len(y) for _, y in eval_sets.values())]).tolist()

    def accuracies(step: int) -> dict:
        hits = forward_all(net, x_all, info)[0].argmax(1)
        point: dict = {"step": step}
        for i, (name, (_, y)) in enumerate(eval_sets.items()):
            part = hits[ends[i]:ends[i + 1]]
            point[f"acc_{name}"] = (part == y).double().mean().item() if len(y) else None
        return point

    curve = [accuracies(0)]
    order = torch.randperm(len(y_fit), generator=gen)
    at = 0
    for step in range(1, steps + 1):
        if at + min(batch_size, len(y_fit)) > len(order):
            order, at = torch.randperm(len(y_fit), generator=gen), 0
        idx = order[at: at + batch_size].to(device)
        at += len(idx)
        net.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(net(normalise(x_fit[idx], info)), y_fit[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(accuracies(step))
    return curve


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
          progress: ProgressFn | None = None) -> dict:
    """Every panel of the audit for `models` (original, retrained and, for an unlearning run,
    unlearned). `headline`: the run's own SVC-based `mia` per model, shown with the AUC."""
    say = progress or (lambda fraction, phase: None)
    settings.check(int(exp.forget.sum()))
    start = time.perf_counter()
    models = {m: models[m] for m in MODELS if m in models}
    train, test, logits = {}, {}, {}
    for i, (m, model) in enumerate(models.items()):
        say(0.4 * i / len(models), f"layers: {m}")
        train[m] = layer_outputs(model, exp.x_train, exp.info)
        test[m] = layer_outputs(model, exp.x_test, exp.info)
        logits[m] = {"train": train[m].logits, "test": test[m].logits}
        if exp.x_trigger is not None:
            logits[m]["trigger"] = forward_all(model, exp.x_trigger, exp.info)[0]
    folded = fold_last_block([*train.values(), *test.values()])
    train, test = dict(zip(train, folded[:len(train)], strict=True)), \
        dict(zip(test, folded[len(train):], strict=True))
    layers = layer_geometry(train, test, exp, cfg.eval, cfg.seed)
    say(0.45, "membership")
    description, _, _ = nonmember_rows(exp)
    mia = {m: {**membership(logits[m], exp, settings, cfg.seed),
               "mia": (headline or {}).get(m)} for m in models}
    fit, sets, second = relearn_sets(exp, settings, cfg.seed)
    tc = cfg.train
    curves = {}
    for i, (m, model) in enumerate(models.items()):
        say(0.5 + 0.45 * i / len(models), f"relearn: {m}")
        curves[m] = relearn(model, exp.x_train[fit], exp.y_train[fit],
                            {"forget": (exp.x_train[sets["forget"]],
                                        exp.y_train[sets["forget"]]),
                             second: (exp.x_test[sets[second]], exp.y_test[sets[second]])},
                            exp.info, settings.relearn_steps, tc.lr, tc.momentum,
                            tc.weight_decay, tc.batch_size, cfg.seed)
    target = curves["original"][0]["acc_forget"] if "original" in curves else None
    target = None if target is None else RELEARN_THRESHOLD * target
    relearnt = {m: {"steps_to_relearn": steps_to_relearn(c, "acc_forget", target), "curve": c}
                for m, c in curves.items()}
    say(0.97, "classes")
    classes = classwise(logits, exp, cfg.scenario.target
                        if cfg.scenario.kind == "backdoor" else None)
    return {
        "layers": layers,
        "relearn": relearnt,
        "mia": mia,
        "classwise": classes,
        "settings": {
            **asdict(settings), "m": len(fit), "seed": cfg.seed, "eval": asdict(cfg.eval),
            "lr": tc.lr, "relearn_threshold": target, "relearn_second": second,
            "relearn_second_title": ("test samples of the forgotten classes"
                                     if second == "test_forgotten" else
                                     "test samples (this scenario forgets no class)"),
            "relearn_eval_samples": {k: len(v) for k, v in sets.items()},
            "nonmembers": description, "scenario": cfg.scenario.kind,
        },
        "seconds": round(time.perf_counter() - start, 3),
        "device": str(next(next(iter(models.values())).parameters()).device),
    }


SECTIONS = ("layers", "relearn", "mia", "classwise", "settings")


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
    bundle = finite(audit(models, exp, cfg, settings, headline, progress))
    path = audit_path(run_folder, settings)
    checked.save_json(bundle, path)
    return path, bundle
