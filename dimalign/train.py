"""Training of the original (on D) and retrained (on D_r) models, cached on disk, and the
`Progress` reports that training and the unlearning loop (`methods/loop.py`) both send.

A report's phase says what is training: "original" or "retrained" here, "unlearn" for the whole
schedule of an unlearning method (a method's own phases, e.g. MUDA's forget and recover, are
not progress phases: they appear in the run's telemetry).

Data stays as uint8 tensors on the training device and is augmented there, so a GPU never waits
on a DataLoader. On CUDA: bf16 autocast and channels_last. Models are cached under a hash of
everything that defines them; checkpoints are state dicts with a sha256 sidecar
(`dimalign.checked`), loaded with `weights_only=True`. A damaged one is set aside and trained
again.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dimalign import checked, paths
from dimalign.config import Config
from dimalign.data import Experiment, augment, build_experiment, normalise, trigger_size
from dimalign.datasets import IMAGEFOLDER, DatasetInfo
from dimalign.errors import ConfigError
from dimalign.memo import LRU
from dimalign.models import Classifier, TorchvisionClassifier, build_model

CACHE_VERSION = 3  # bump when training changes in a way that makes old checkpoints stale
LOSS_EVERY = 10  # read the loss back from the device every n steps (each read is a sync)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Progress:
    phase: str  # "original" or "retrained" (a baseline), or "unlearn" (the unlearning loop)
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based, within the epoch
    steps: int  # steps per epoch
    loss: float | None  # None on steps where it was not read back

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.steps + self.step) / (self.epochs * self.steps)


ProgressFn = Callable[[Progress], None]


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU; a named device that is not there is an error."""
    has = {"cuda": torch.cuda.is_available(),
           "mps": getattr(torch.backends, "mps", None) is not None
           and torch.backends.mps.is_available(),
           "cpu": True}
    if preference == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has.get(preference, False):
        raise RuntimeError(f"device {preference!r} is not available here; use device=auto")
    return torch.device(preference)


_WARM: set[tuple] = set()


def warm_up(model: Classifier, x: torch.Tensor) -> None:
    """Once per process and architecture: a throwaway optimiser (its first construction imports
    torch._dynamo, about 2 s), forward, backward and eigendecomposition. Training and unlearning
    times then measure the work, not the process's one-time start-up."""
    key = (type(model).__name__, model.feature_dim, tuple(x.shape[1:]), str(x.device))
    if key in _WARM:
        return
    scratch = copy.deepcopy(model).train()
    torch.optim.SGD(scratch.parameters(), lr=0.1, momentum=0.9)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        feats = scratch.features(x)
        loss = scratch.head(feats).logsumexp(1).mean()
    loss.backward()
    torch.linalg.eigh(feats.detach().double().T @ feats.detach().double())
    _WARM.add(key)


def compiled(model: nn.Module) -> nn.Module:
    backend = os.environ.get("DIMALIGN_COMPILE_BACKEND", "inductor")
    return torch.compile(model, backend=backend)


def train_classifier(cfg: Config, info: DatasetInfo, x: torch.Tensor, y: torch.Tensor,
                     device: torch.device, phase: str,
                     progress: ProgressFn | None = None) -> tuple[Classifier, float]:
    """Train a fresh model on uint8 images x (N, C, H, W) and labels y (N,).
    Returns the model and the training wall time in seconds (process warm-up excluded)."""
    tc = cfg.train
    torch.manual_seed(cfg.train_seed)
    model = build_model(cfg.model_name, info.channels, info.num_classes, info.size).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    x, y = x.to(device), y.to(device)
    n = len(y)
    warm_up(model, normalise(x[: tc.batch_size], info))
    start = time.perf_counter()
    step_model = compiled(model) if tc.compile else model  # shares the weights of `model`
    steps = max(1, math.ceil(n / tc.batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum,
                          weight_decay=tc.weight_decay, nesterov=tc.momentum > 0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.epochs * steps,
                                                pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.train_seed)
    model.train()
    for epoch in range(1, tc.epochs + 1):
        order = torch.randperm(n, generator=gen).to(device)
        for step in range(1, steps + 1):
            idx = order[(step - 1) * tc.batch_size: step * tc.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                sched.step()
                continue
            xb = augment(x[idx], info, gen) if tc.augment else x[idx]
            xb = normalise(xb, info)
            if cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = loss_fn(step_model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = None
            if step % LOSS_EVERY == 0 or step == steps:
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"{phase}: cross-entropy loss became {value} at "
                                           f"epoch {epoch}, step {step}; lower train.lr")
            if progress is not None:
                progress(Progress(phase, epoch, tc.epochs, step, steps, value))
    model.eval()
    if cuda:
        torch.cuda.synchronize()
    return model, time.perf_counter() - start


# ---------------------------------------------------------------------------- cache


def scenario_key(cfg: Config) -> dict:
    """Only the scenario fields that change the data (so e.g. `fraction` is ignored for class)."""
    sc = cfg.scenario
    if sc.kind == "class":
        return {"kind": "class", "classes": sorted(set(sc.classes))}
    if sc.kind == "random":
        return {"kind": "random", "fraction": sc.fraction}
    return {"kind": "backdoor", "fraction": sc.fraction, "target": sc.target,
            "trigger_size": trigger_size(cfg)}


def cache_key(cfg: Config, role: str) -> dict:
    """Everything that defines a baseline model. The original model sees all of D, which only
    the backdoor scenario changes, so one original serves every class and random scenario.
    An imagefolder adds its files' identity; an original from `original_checkpoint` is that
    file (path and sha256 of its bytes), whatever the training settings."""
    key = {"version": CACHE_VERSION, "role": role, "dataset": cfg.dataset, "seed": cfg.seed,
           "model": cfg.model_name,
           # compiling changes how fast, not what is learned, like the device
           "train": {k: v for k, v in cfg.to_dict()["train"].items() if k != "compile"}}
    if cfg.dataset == IMAGEFOLDER:
        # the fingerprint covers the folder's absolute path and every file's stat identity
        key["data"] = {"image_size": cfg.image_size, "fingerprint": cfg.info.fingerprint}
    if role == "original" and cfg.original_checkpoint:
        del key["seed"], key["train"]  # nothing is trained
        path = os.path.abspath(os.path.expanduser(cfg.original_checkpoint))
        key["checkpoint"] = {"path": path, "sha256": file_sha256(path)}
        return key
    if cfg.replicate:  # replicate 0 keeps the keys models were cached under before replicates
        key["replicate"] = cfg.replicate
    if role == "retrained" or cfg.scenario.kind == "backdoor":
        key["scenario"] = scenario_key(cfg)
    return key


_SHA256: dict[tuple, str] = {}


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (remembered while its size, times and inode stay: the change
    time catches a rewrite whose modification time was set back)."""
    st = os.stat(path)
    ident = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if ident not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA256[ident] = h.hexdigest()
    return _SHA256[ident]


def experiment_key(cfg: Config) -> str:
    """Which experiment a run belongs to: runs that share data, split, model and baselines (the
    identity of both baseline checkpoints; also the share key of their baselines job). Stored
    with each run at submit."""
    blob = json.dumps([cache_key(cfg, "original"), cache_key(cfg, "retrained")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stored_experiment_key(config: dict) -> str | None:
    """The experiment key of a stored config; None when it no longer validates (or names files
    that are gone): such a run belongs to no experiment."""
    from dimalign.config import config_from_dict

    try:
        return experiment_key(config_from_dict(config))
    except Exception:  # noqa: BLE001 - an old run must not stop the store from opening
        return None


def cache_path(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return str(paths.models_dir() / f"{key['role']}-{digest}.pt")


def save_checkpoint(model: nn.Module, path: str, meta: dict) -> None:
    """Write weights and their metadata, each atomically with its sha256 (`dimalign.checked`):
    a crash never leaves a half-written file, and later damage is found when it is read. The
    metadata goes last: a model counts as cached once it is there."""
    checked.save_torch({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    checked.save_json(meta, f"{path[:-3]}.json", indent=1)


def model_from_state(cfg: Config, state: dict, device: torch.device) -> Classifier:
    info = cfg.info
    model = build_model(cfg.model_name, info.channels, info.num_classes, info.size)
    model.load_state_dict(state)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def load_checkpoint(cfg: Config, path: str, device: torch.device) -> Classifier:
    """A saved state dict, checked against its sha256: DamagedFile (the file set aside) when
    it does not match or cannot be read."""
    return model_from_state(cfg, checked.load_torch(path), device)


@dataclass
class Baselines:
    experiment: Experiment
    original: Classifier
    retrained: Classifier
    device: torch.device
    seconds: dict[str, float]  # training wall time (as recorded when trained)
    cached: dict[str, bool]  # whether each came from the cache this time
    checkpoints: dict[str, str]  # identity of each checkpoint: file name and creation time


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cached_meta(cfg: Config, role: str,
                say: Callable[[str], None] | None = _say) -> dict | None:
    """Metadata of the cached model for `role` (seconds, device, samples), or None. Metadata
    that fails its checksum or does not parse is set aside (and the model trained again)."""
    path = cache_path(cache_key(cfg, role))
    meta_path = path[:-3] + ".json"
    if not (os.path.exists(path) and os.path.exists(meta_path)):
        return None
    try:
        meta = checked.load_json(meta_path)
        if not (isinstance(meta, dict) and "seconds" in meta and "created" in meta):
            raise checked.damaged(meta_path, "not the metadata dimalign writes")
    except FileNotFoundError:  # set aside by another process just now
        return None
    except checked.DamagedFile as err:
        if say is not None:
            say(f"metadata of the cached {role} model was damaged ({err.reason}; {err.where}); "
                "training it again")
        return None
    return meta


def baselines_cached(cfg: Config) -> bool:
    """Whether this config's baselines (original and retrained, and the models that decide a
    random forget set's strata: `baseline_models`) are in the cache."""
    return all(cached_meta(c, role) is not None for c, role in baseline_models(cfg))


def baseline_model(cfg: Config, exp: Experiment, role: str, device: torch.device,
                   progress: ProgressFn | None = None,
                   say: Callable[[str], None] = _say) -> tuple[Classifier, float, bool]:
    """Load the cached model for `role` or train and cache it. Returns (model, seconds, cached).
    A cached model that is damaged is set aside and trained again; `say` reports it."""
    key = cache_key(cfg, role)
    path = cache_path(key)
    loaded = _load_cached(cfg, role, path, device, say)
    if loaded is not None:
        return loaded
    # Several processes may want the same model: one trains it, the others wait on the lock
    # and then load what it saved.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path[:-3] + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        loaded = _load_cached(cfg, role, path, device, say)
        if loaded is not None:
            return loaded
        if role == "original" and cfg.original_checkpoint:
            return _import_original(cfg, device, key, path)
        return _train_and_save(cfg, exp, role, device, key, path, progress)


def _load_cached(cfg: Config, role: str, path: str, device: torch.device,
                 say: Callable[[str], None]) -> tuple[Classifier, float, bool] | None:
    """The cached model and its recorded seconds; None when it is not cached, or was damaged
    (then it is set aside, and `say` says so)."""
    meta = cached_meta(cfg, role, say)
    if meta is None:
        return None
    try:
        return load_checkpoint(cfg, path, device), float(meta["seconds"]), True
    except FileNotFoundError:  # set aside by another process just now
        return None
    except checked.DamagedFile as err:
        say(f"cached {role} model was damaged ({err.reason}; {err.where}); training it again")
        return None


def _import_original(cfg: Config, device: torch.device, key: dict,
                     path: str) -> tuple[Classifier, float, bool]:
    """The original model from the user's state dict file (no training: 0 seconds), checked
    against the model and cached like a trained one."""
    source = key["checkpoint"]["path"]
    info = cfg.info
    model = build_model(cfg.model_name, info.channels, info.num_classes, info.size)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or pickled objects weights_only refuses
        raise ConfigError("original_checkpoint", f"cannot read {source!r} as a state dict: "
                          "not a file torch.save wrote, or it holds more than tensors "
                          f"({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ...} wrapping
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ConfigError("original_checkpoint", f"{source!r} is not a state dict (a dict of "
                          "tensors, as torch.save(model.state_dict(), PATH) writes)")
    # NaN weights evaluate to constant outputs, which look like perfect forgetting
    bad = next((k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()),
               None)
    if bad is not None:
        raise ConfigError("original_checkpoint", f"{source!r} holds weights that are not finite "
                          f"(NaN or infinity), first in {bad}; use a checkpoint of a model "
                          "that trained without diverging")
    tv = isinstance(model, TorchvisionClassifier)
    if tv:
        state = model.from_torchvision_state(state)
    _check_fits(cfg, model, state, source)
    model.load_state_dict(state)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    save_checkpoint(model, path, {"key": key, "seconds": 0.0, "device": str(device),
                                  "samples": 0, "torch": torch.__version__,
                                  "created": time.time(), "imported": source})
    return model, 0.0, False


def _check_fits(cfg: Config, model: Classifier, state: dict, source: str) -> None:
    """ConfigError naming the first few keys where a state dict does not fit the model."""
    name = (model.to_torchvision_key if isinstance(model, TorchvisionClassifier)
            else (lambda k: k))
    expected = model.state_dict()
    missing = [name(k) for k in expected if k not in state]
    unexpected = [name(k) for k in state if k not in expected]
    shapes = [f"{name(k)} {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                       ("shape mismatch", shapes)):
        if keys:
            more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{what} {', '.join(keys[:3])}{more}")
    if problems:
        raise ConfigError("original_checkpoint", f"{source!r} does not fit model "
                          f"{cfg.model_name} with {cfg.info.num_classes} classes and "
                          f"{cfg.info.channels} channel(s): " + "; ".join(problems))


def _train_and_save(cfg: Config, exp: Experiment, role: str, device: torch.device, key: dict,
                    path: str, progress: ProgressFn | None) -> tuple[Classifier, float, bool]:
    x, y = exp.x_train, exp.y_train
    if role == "retrained":
        keep = exp.retain_idx
        x, y = x[keep], y[keep]
    model, seconds = train_classifier(cfg, exp.info, x, y, device, role, progress)
    save_checkpoint(model, path, {"key": key, "seconds": seconds, "device": str(device),
                                  "samples": len(y), "torch": torch.__version__,
                                  "created": time.time()})
    return model, seconds, False


LOADED: LRU[Baselines] = LRU(4)  # recent experiments' baselines, kept in a warm worker


def get_baselines(cfg: Config, progress: ProgressFn | None = None,
                  say: Callable[[str], None] = _say) -> Baselines:
    """Original and retrained models of a config, from the cache when they are there (and from
    memory when this process loaded the same checkpoints lately: callers never change them)."""
    device = pick_device(cfg.device)
    wanted = baseline_models(cfg)
    metas = [cached_meta(c, role, say) for c, role in wanted]
    if all(metas):
        key = (str(device), cfg.scenario.stratify_by,
               *(f"{cache_path(cache_key(c, role))}@{meta['created']}"
                 for (c, role), meta in zip(wanted, metas, strict=True)))
        return LOADED.get_or_make(key, lambda: _load_or_train(cfg, device, progress, say))
    return _load_or_train(cfg, device, progress, say)


def _load_or_train(cfg: Config, device: torch.device, progress: ProgressFn | None,
                   say: Callable[[str], None] = _say) -> Baselines:
    exp = build_experiment(cfg)
    models, seconds, cached, ids = {}, {}, {}, {}
    for role in ("original", "retrained"):
        models[role], seconds[role], cached[role] = baseline_model(cfg, exp, role, device,
                                                                   progress, say)
        path = cache_path(cache_key(cfg, role))
        ids[role] = f"{os.path.basename(path)}@{cached_meta(cfg, role)['created']}"
    if cfg.scenario.kind == "random":
        exp = dataclasses.replace(exp, hardness=forget_hardness(cfg, exp, models, device,
                                                                progress, say))
    return Baselines(exp, models["original"], models["retrained"], device, seconds, cached, ids)


def strata_models(cfg: Config) -> list[tuple[Config, str]]:
    """The baselines that decide a random forget set's strata (`dimalign.strata`): those of
    replicate 0, the seed's own (the strata, like D_f, are the same in every replicate): its
    original, and with scenario.stratify_by=gap its retrained model too. None otherwise."""
    from dimalign.strata import SOURCE_REPLICATE

    if cfg.scenario.kind != "random":
        return []
    source = cfg.with_replicate(SOURCE_REPLICATE)
    roles = ("original", "retrained") if cfg.scenario.stratify_by == "gap" else ("original",)
    return [(source, role) for role in roles]


def baseline_models(cfg: Config) -> list[tuple[Config, str]]:
    """Every cached model `get_baselines` reads for a config, as (config, role): its original
    and retrained models, and `strata_models` of another replicate."""
    own = [(cfg, "original"), (cfg, "retrained")]
    return own + [(c, role) for c, role in strata_models(cfg) if c.replicate != cfg.replicate]


def forget_hardness(cfg: Config, exp: Experiment, models: dict[str, Classifier],
                    device: torch.device, progress: ProgressFn | None,
                    say: Callable[[str], None]) -> torch.Tensor:
    """(N,) how hard each forget sample is to forget (`strata.difficulty`; NaN for retain
    samples), from `strata_models`: this replicate's own `models` for replicate 0, else
    replicate 0's, loaded (or trained) from the cache."""
    from dimalign.features import forward_all
    from dimalign.strata import difficulty

    rows = exp.forget_idx
    logits = {}
    for source, role in strata_models(cfg):
        model = (models[role] if source.replicate == cfg.replicate
                 else baseline_model(source, exp, role, device, progress, say)[0])
        logits[role] = forward_all(model, exp.x_train[rows], exp.info)[0].double().numpy()
    hard = difficulty(cfg.scenario.stratify_by, logits["original"],
                      exp.y_train[rows].numpy(), logits.get("retrained"))
    out = torch.full((len(exp.y_train),), float("nan"), dtype=torch.float64)
    out[rows] = torch.from_numpy(hard)
    return out
