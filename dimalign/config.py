"""Experiment configuration: frozen dataclasses, presets, `key=value` overrides, validation.

A config is validated once, here, and then passed around frozen. Every error names the key
and the values it accepts, so the CLI and the UI can show it as it is. Method knobs are the
exception to "here": their sections are handed whole to the method's spec
(`MethodSpec.parse` for override text, `MethodSpec.check` for values), which knows their types
and ranges. The method registry is imported when first needed rather than at the top: it loads
plugin methods, and a plugin may itself import this module.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources

from dimalign.datasets import (
    DATASET_NAMES,
    IMAGEFOLDER,
    DatasetInfo,
    dataset_info,
)
from dimalign.errors import ConfigError
from dimalign.models import TORCHVISION_PREFIX, feature_dim, input_size_problem, is_torchvision
from dimalign.strata import STRATIFY_BY
from dimalign.values import from_text

SCENARIO_KINDS = ("class", "random", "backdoor")
MODELS = ("auto", "cnn", "resnet18")
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_PRESET = "digits-class"
MIA_FEATURES = ("confidence", "entropy", "correctness")  # eval.mia_feature
SEED_LIMIT = 2**32  # seeds feed numpy and scikit-learn, whose generators take 32-bit seeds
REPLICATE_LIMIT = 1000
REPLICATE_STRIDE = 1_000_003  # a prime: replicates of nearby seeds never share a training seed


def check_replicates(count: int, first: int = 0) -> None:
    """Replicates first..first+count-1: at least one, none past the limit. `compare` and
    `sweep` (and the pages calling them) refuse alike."""
    if count < 1:
        raise ConfigError("--replicates", f"must be at least 1, got {count}")
    if first + count > REPLICATE_LIMIT:
        raise ConfigError("--replicates", f"replicates {first}..{first + count - 1} pass the "
                          f"limit of {REPLICATE_LIMIT} (0..{REPLICATE_LIMIT - 1})")


@dataclass(frozen=True)
class ScenarioConfig:
    kind: str = "class"  # class | random | backdoor
    classes: tuple[int, ...] = (3,)  # class: the classes to forget
    fraction: float = 0.1  # random/backdoor: fraction of training samples in the forget set
    target: int = 0  # backdoor: the label the trigger maps to
    trigger_size: int = 0  # backdoor: side of the square trigger in pixels; 0 = 1/8 of the image
    # random: what splits D_f into easy, medium and hard thirds (dimalign/strata.py): the
    # original model's margin, or the original's minus the retrained model's confidence;
    # to_dict leaves it out while it is the default, so every other config keeps its identity
    stratify_by: str = "margin"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    # torch.compile the training step (backend DIMALIGN_COMPILE_BACKEND, default inductor): pays
    # on a GPU for long runs; on a CPU its one-time compile costs more than small runs save
    compile: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """How feature-space metrics are computed. Each is one of our choices (docs/method.md,
    "Settings: the paper's and ours"), recorded per run."""

    energy: float = 0.9  # DA and angles: k = fewest eigenvectors holding this retain energy
    k: int = 0  # a fixed k for the retain basis instead (0 = use energy)
    center: bool = False  # subtract the retain mean before DA (the paper's form is uncentred)
    mia_samples: int = 1000  # members and non-members (each) the MIA's SVC is fitted on
    # the MIA's output feature: confidence (the literature's reported choice), entropy or
    # correctness; and how many seeded draws of its shadow sets give its mean and sd
    mia_feature: str = "confidence"
    mia_repeats: int = 5
    nmi_samples: int = 5000  # forget + test samples clustered by k-means for NMI
    cka_samples: int = 2000  # forget + test samples CKA compares models on
    feature_samples: int = 500  # per split, features kept for the dashboard (spectra use all)
    # the film of an unlearning run (dimalign/methods/film.py): a fixed sample of each split,
    # recorded at least `film_frames` times (every step of a shorter run); 0 = no film
    # (bench/film_cost.py: what recording costs a run)
    film_forget: int = 300
    film_retain: int = 300
    film_test: int = 150
    film_frames: int = 30


TELEMETRY_POINTS = 50  # live telemetry points a run gets at least with telemetry_every="auto"


@dataclass(frozen=True)
class UnlearnConfig:
    # steps between live telemetry points: "auto" = at least TELEMETRY_POINTS of them (one per
    # step for shorter runs), N = every N steps, 0 = none
    telemetry_every: int | str = "auto"
    telemetry_samples: int = 64  # per split, the fixed subset telemetry evaluates

    def cadence(self, total_steps: int) -> int:
        """Steps between telemetry points for a run of `total_steps` (0 = no telemetry)."""
        if self.telemetry_every == "auto":
            return max(1, total_steps // TELEMETRY_POINTS)
        return self.telemetry_every


@dataclass(frozen=True)
class Config:
    dataset: str = "digits"
    model: str = "auto"  # auto: cnn for 1-channel data, resnet18 (CIFAR stem) for RGB;
    # or torchvision:NAME, any torchvision classification model (built with weights=None)
    seed: int = 0
    # a replicate draws new model initialisations, batch orders and method randomness
    # (train_seed) while the data split and the forget set stay those of `seed`; 0 = the
    # seed's own runs (to_dict leaves it out, so their keys stay what they were)
    replicate: int = 0
    device: str = "auto"  # not part of any cache key: the same run on CPU or GPU is the same run
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    # knob overrides per method, e.g. {"muda": {"lambda_da": 2.0}}; defaults live in the
    # method registry (dimalign.methods), which also checks these
    methods: dict = field(default_factory=dict)
    # your own data and model (docs/cli.md "Your own data and model"); to_dict leaves them out while
    # they keep their defaults, so the identity of every other config stays what it was
    dataset_root: str = ""  # dataset=imagefolder: a folder with one sub-folder per class
    image_size: int = 32  # dataset=imagefolder: images are resized to image_size x image_size
    original_checkpoint: str = ""  # a state dict file used as the original model (not trained)

    @property
    def info(self) -> DatasetInfo:
        """The dataset's facts (for imagefolder, from a scan of dataset_root, made once per
        config object: a config describes one run)."""
        if self.dataset != IMAGEFOLDER:
            return dataset_info(self.dataset)
        if "_info" not in self.__dict__:  # frozen: write past __setattr__, as cached_property does
            self.__dict__["_info"] = dataset_info(self.dataset, self.dataset_root, self.image_size)
        return self.__dict__["_info"]

    def method_params(self, name: str) -> dict:
        """Every knob of a method: its defaults with this config's overrides."""
        from dimalign.methods import get_method

        return get_method(name).resolve(self.methods.get(name, {}))

    @property
    def train_seed(self) -> int:
        """Seeds model initialisation, batch order and the unlearning method's randomness:
        `seed` itself for replicate 0, a different seed for each further replicate. The split,
        the forget set and the evaluation's samples use `seed` alone."""
        return (self.seed + REPLICATE_STRIDE * self.replicate) % SEED_LIMIT

    def with_replicate(self, replicate: int) -> Config:
        return dataclasses.replace(self, replicate=replicate)

    @property
    def model_name(self) -> str:
        if self.model != "auto":
            return self.model
        return "cnn" if self.info.channels == 1 else "resnet18"

    def to_dict(self) -> dict:
        """Plain data that `config_from_dict` turns back into this config (method knobs appear
        as their own sections, as in a preset file)."""
        d = dataclasses.asdict(self)
        d.update(d.pop("methods"))
        for name in (*OWN_DATA_KEYS, "replicate"):
            if d[name] == getattr(Config, name):
                del d[name]
        if d["scenario"]["stratify_by"] == ScenarioConfig.stratify_by:
            del d["scenario"]["stratify_by"]
        return d


OWN_DATA_KEYS = ("dataset_root", "image_size", "original_checkpoint")


# ---------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    folder = resources.files("dimalign") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> tuple[str, dict]:
    """Return (description, settings dict) of a named preset."""
    names = preset_names()
    if name not in names:
        raise ConfigError("preset", f"unknown preset {name!r}; choose one of {', '.join(names)}")
    text = (resources.files("dimalign") / "presets" / f"{name}.toml").read_text()
    data = tomllib.loads(text)
    description = data.pop("description", "")
    return description, data


# ---------------------------------------------------------------------------- building


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def build_config(preset: str = DEFAULT_PRESET, overrides: typing.Iterable[str] = ()) -> Config:
    """Preset + `key=value` overrides -> a validated, frozen Config."""
    _, settings = load_preset(preset)
    return override_config(settings, overrides)


def override_config(settings: dict, overrides: typing.Iterable[str] = ()) -> Config:
    """Settings (a preset's, or a saved config's `to_dict`) + overrides -> a validated Config."""
    settings = copy.deepcopy(settings)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(settings, key, value)
    return config_from_dict(settings)


def config_from_dict(settings: dict) -> Config:
    cfg = _build(Config, settings, prefix="")
    validate(cfg)
    return cfg


def _method_registry() -> dict:
    from dimalign.methods import REGISTRY  # not at the top: see the module docstring

    return REGISTRY


def _section_hints(cls) -> dict:
    hints = typing.get_type_hints(cls)
    hints.pop("methods", None)  # method sections are checked against the registry instead
    return hints


def _set_path(settings: dict, key: str, raw: str) -> None:
    # Walk the dataclass tree so unknown keys fail here, naming the allowed ones.
    cls, node, parts = Config, settings, key.split(".")
    registry = _method_registry()
    if parts[0] in registry:  # a method's knob: its spec reads the text (and later checks it)
        method, _, knob = key.partition(".")
        settings.setdefault(method, {})[knob] = registry[method].parse(knob, raw)
        return
    for i, part in enumerate(parts):
        hints = _section_hints(cls)
        if part not in hints:
            prefix = ".".join(parts[:i])
            allowed = ", ".join(_qualified(prefix, n) for n in hints)
            if not prefix:
                allowed += ", or a method's knob such as muda.lambda_da"
            raise ConfigError(key, f"unknown key; allowed keys are {allowed}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(hints[part]):
                raise ConfigError(key, "is a section; set one of its keys, e.g. " +
                                  _qualified(key, next(iter(typing.get_type_hints(hints[part])))))
            node[part] = from_text(key, hints[part], raw)
        else:
            cls = hints[part]
            node = node.setdefault(part, {})


def _qualified(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(prefix or "config", "expected a table of settings")
    hints = _section_hints(cls)
    methods = {}
    if cls is Config:
        registry = _method_registry()
        data = dict(data)
        for name in [k for k in data if k in registry]:
            section = data.pop(name)
            if not isinstance(section, dict):
                raise ConfigError(name, "expected a table of the method's knobs")
            methods[name] = registry[name].check(section)  # raises on an unknown knob or value
    unknown = sorted(set(data) - set(hints))
    if unknown:
        allowed = ", ".join(_qualified(prefix, n) for n in hints)
        raise ConfigError(_qualified(prefix, unknown[0]),
                          f"unknown key; allowed keys are {allowed}")
    kwargs = {}
    for name, value in data.items():
        key, hint = _qualified(prefix, name), hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _coerce(key, hint, value)
    if cls is Config:
        kwargs["methods"] = methods
    return cls(**kwargs)


def _coerce(key: str, hint, value):
    if hint == int | str:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(key, f"expected an integer or a word, got {value!r}")
        return value
    if hint == tuple[int, ...]:
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(key, int, v) for v in values)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(key, f"expected {hint.__name__}, got {value!r}")
    if hint is float and not math.isfinite(value):  # NaN passes every range check below
        raise ConfigError(key, f"expected a finite number, got {value}")
    return value


# ---------------------------------------------------------------------------- validation


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not allowed; choose one of {', '.join(allowed)}")


def validate(cfg: Config) -> None:
    """Raise ConfigError on the first wrong value. Needs no data: sizes come from the registry."""
    _one_of("dataset", cfg.dataset, DATASET_NAMES)
    if not is_torchvision(cfg.model):
        _one_of("model", cfg.model, (*MODELS, f"{TORCHVISION_PREFIX}NAME"))
    _one_of("device", cfg.device, DEVICES)
    if not 0 <= cfg.seed < SEED_LIMIT:
        raise ConfigError("seed", f"must lie in 0..{SEED_LIMIT - 1} (numpy and scikit-learn "
                          f"take 32-bit seeds), got {cfg.seed}")
    if not 0 <= cfg.replicate < REPLICATE_LIMIT:
        raise ConfigError("replicate", f"must lie in 0..{REPLICATE_LIMIT - 1}, got "
                          f"{cfg.replicate}")
    info = _validate_own_data(cfg)
    sc, n = cfg.scenario, info.num_classes
    _one_of("scenario.kind", sc.kind, SCENARIO_KINDS)
    if sc.kind == "class":
        if not sc.classes:
            raise ConfigError("scenario.classes", f"forget set is empty; name classes in 0..{n-1}")
        bad = [c for c in sc.classes if not 0 <= c < n]
        if bad:
            raise ConfigError("scenario.classes", f"class {bad[0]} out of range; allowed 0..{n-1}")
        if len(set(sc.classes)) >= n:
            raise ConfigError("scenario.classes", f"retain set is empty; forget at most {n-1} "
                              f"of the {n} classes")
    else:
        if not 0.0 < sc.fraction < 1.0:
            raise ConfigError("scenario.fraction", f"must lie in (0, 1), got {sc.fraction}")
        n_forget = round(sc.fraction * info.n_train)
        if n_forget < 1:
            raise ConfigError("scenario.fraction", f"forget set is empty ({sc.fraction} of "
                              f"{info.n_train} samples); use at least {1 / info.n_train:.2g}")
        if n_forget >= info.n_train:
            raise ConfigError("scenario.fraction", "retain set is empty; use a smaller fraction")
    _one_of("scenario.stratify_by", sc.stratify_by, STRATIFY_BY)
    if sc.kind != "random" and sc.stratify_by != ScenarioConfig.stratify_by:
        raise ConfigError("scenario.stratify_by", f"applies to scenario.kind=random only "
                          f"(scenario.kind is {sc.kind!r})")
    if sc.kind == "backdoor":
        if not 0 <= sc.target < n:
            raise ConfigError("scenario.target",
                              f"class {sc.target} out of range; allowed 0..{n-1}")
        if not 0 <= sc.trigger_size <= info.size // 2:
            raise ConfigError("scenario.trigger_size", f"must lie in 0..{info.size // 2} "
                              "(0 = automatic)")
    tr = cfg.train
    if tr.epochs < 1:
        raise ConfigError("train.epochs", f"must be at least 1, got {tr.epochs}")
    if tr.batch_size < 1:
        raise ConfigError("train.batch_size", f"must be at least 1, got {tr.batch_size}")
    if not tr.lr > 0:
        raise ConfigError("train.lr", f"must be positive, got {tr.lr}")
    if not 0 <= tr.momentum < 1:
        raise ConfigError("train.momentum", f"must lie in [0, 1), got {tr.momentum}")
    if tr.weight_decay < 0:
        raise ConfigError("train.weight_decay", f"must be non-negative, got {tr.weight_decay}")
    try:
        dim = feature_dim(cfg.model_name, info.size)
    except ValueError as err:  # an unknown torchvision model, or one without nn.Linear
        raise ConfigError("model", str(err)) from None
    too_small = input_size_problem(cfg.model_name, info.size)
    if too_small:
        via = " (image_size)" if cfg.dataset == IMAGEFOLDER else ""
        raise ConfigError("model", f"{cfg.model_name} {too_small}; this dataset's are "
                          f"{info.size}x{info.size}{via}")
    ev = cfg.eval
    if not 0 < ev.energy <= 1:
        raise ConfigError("eval.energy", f"must lie in (0, 1], got {ev.energy}")
    if not 0 <= ev.k <= dim:
        raise ConfigError("eval.k", f"must lie in 0..{dim} (the feature dimension of "
                          f"{cfg.model_name}; 0 = choose k from eval.energy), got {ev.k}")
    _check_feature_counts(cfg, dim)
    every = cfg.unlearn.telemetry_every
    if every != "auto" and (isinstance(every, str) or every < 0):
        raise ConfigError("unlearn.telemetry_every", f"must be 'auto' (at least "
                          f"{TELEMETRY_POINTS} points a run), a number of steps or 0 (no "
                          f"telemetry), got {every!r}")
    if cfg.unlearn.telemetry_samples < 2:
        raise ConfigError("unlearn.telemetry_samples", "must be at least 2")
    if ev.mia_feature not in MIA_FEATURES:
        raise ConfigError("eval.mia_feature", f"{ev.mia_feature!r} is not allowed; choose one "
                          f"of {', '.join(MIA_FEATURES)}")
    if not 1 <= ev.mia_repeats <= 100:
        raise ConfigError("eval.mia_repeats", f"must lie in 1..100, got {ev.mia_repeats}")
    for name in ("mia_samples", "nmi_samples", "cka_samples", "feature_samples"):
        if getattr(ev, name) < 10:
            raise ConfigError(f"eval.{name}", f"must be at least 10, got {getattr(ev, name)}")
    for name in ("film_forget", "film_retain", "film_test"):
        if not 1 <= getattr(ev, name) <= 5000:
            raise ConfigError(f"eval.{name}", f"must lie in 1..5000, got {getattr(ev, name)}")
    if ev.film_frames != 0 and not 2 <= ev.film_frames <= 1000:
        raise ConfigError("eval.film_frames", f"must be 0 (no film) or lie in 2..1000, got "
                          f"{ev.film_frames}")


def _check_feature_counts(cfg: Config, dim: int) -> None:
    """Method knobs that count feature dimensions (`Knob.feature_count`, e.g. muda.k) fit the
    model's features: the registry checks their range, only the config knows the model."""
    registry = _method_registry()
    for method, section in cfg.methods.items():
        for name, value in section.items():
            if registry[method].knobs[name].feature_count and value > dim:
                raise ConfigError(f"{method}.{name}", f"must lie in 0..{dim} (the feature "
                                  f"dimension of {cfg.model_name}; 0 = not set), got {value}")


def _validate_own_data(cfg: Config) -> DatasetInfo:
    """Check dataset_root, image_size and original_checkpoint; return the dataset's facts."""
    if cfg.dataset != IMAGEFOLDER:
        for name in ("dataset_root", "image_size"):
            if getattr(cfg, name) != getattr(Config, name):
                raise ConfigError(name, f"applies to dataset={IMAGEFOLDER} only (dataset is "
                                  f"{cfg.dataset!r})")
    elif not 4 <= cfg.image_size <= 1024:
        raise ConfigError("image_size", f"must lie in 4..1024, got {cfg.image_size}")
    info = cfg.info  # an unusable dataset_root raises ConfigError as it is scanned
    checkpoint = cfg.original_checkpoint
    if checkpoint and os.path.isdir(os.path.expanduser(checkpoint)):
        raise ConfigError("original_checkpoint", f"{checkpoint!r} is a directory; give the file "
                          "in it that torch.save wrote (a state dict)")
    if checkpoint and not os.path.isfile(os.path.expanduser(checkpoint)):
        raise ConfigError("original_checkpoint", f"file {cfg.original_checkpoint!r} does not "
                              "exist (a state dict saved with torch.save)")
    return info
