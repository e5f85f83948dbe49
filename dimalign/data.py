"""Data of one experiment: train/test tensors and the retain/forget split of its scenario.

Scenarios (all deterministic from the seed):
- class: D_f = every training sample of the forgotten classes;
- random: D_f = a uniformly drawn fraction of training samples;
- backdoor: D_f = a fraction of non-target samples, stamped with a trigger patch and relabelled
  to the target class. D (what the original model sees) holds them stamped; D_r is the rest.

A random D_f's strata (easy, medium, hard: `Experiment.strata`) need trained models; the
baselines add how hard each sample is (`train.get_baselines`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from dimalign.config import Config
from dimalign.datasets import IMAGEFOLDER, Arrays, DatasetInfo, channel_stats, dataset_info
from dimalign.errors import ConfigError


@dataclass(frozen=True)
class Experiment:
    info: DatasetInfo
    x_train: torch.Tensor  # (N, C, H, W) uint8: D, backdoor samples already stamped
    y_train: torch.Tensor  # (N,) int64, backdoor samples relabelled
    forget: torch.Tensor  # (N,) bool: membership in D_f
    x_test: torch.Tensor  # (M, C, H, W) uint8
    y_test: torch.Tensor  # (M,) int64
    test_forgotten: torch.Tensor  # (M,) bool: test samples of forgotten classes (class scenario)
    y_clean: torch.Tensor  # (N,) true labels (differ from y_train for backdoor)
    x_trigger: torch.Tensor | None = None  # backdoor: stamped test samples of other classes
    y_trigger: torch.Tensor | None = None  # their true labels
    # random: (N,) float64, how hard each forget sample is to forget by the config's
    # scenario.stratify_by (dimalign/strata.py; NaN for retain samples); it needs trained
    # models, so `train.get_baselines` sets it, not `build_experiment`
    hardness: torch.Tensor | None = None

    @property
    def forgotten_classes(self) -> list[int]:
        """Classes forgotten whole (class scenario); empty otherwise."""
        return sorted(set(self.y_test[self.test_forgotten].tolist()))

    @property
    def strata(self) -> torch.Tensor | None:
        """(N,) int64: each forget sample's stratum, 0 (easy) .. 2 (hard), -1 for retain
        samples; None without `hardness` (not a random scenario, or no models yet)."""
        if self.hardness is None:
            return None
        from dimalign.strata import OTHER, tertiles

        out = torch.full((len(self.y_train),), OTHER, dtype=torch.int64)
        out[self.forget] = torch.from_numpy(tertiles(self.hardness[self.forget].numpy()))
        return out

    @property
    def retain_idx(self) -> torch.Tensor:
        return (~self.forget).nonzero().squeeze(1)

    @property
    def forget_idx(self) -> torch.Tensor:
        return self.forget.nonzero().squeeze(1)

    def summary(self) -> dict:
        return {"dataset": self.info.name, "train": len(self.y_train),
                "retain": int((~self.forget).sum()), "forget": int(self.forget.sum()),
                "test": len(self.y_test)}


@functools.lru_cache(maxsize=4)
def load_arrays(dataset: str, seed: int, root: str = "", size: int = 32,
                fingerprint: str = "") -> Arrays:
    """Raw train/test tensors of a dataset (cached in-process: pages and runs share them).
    imagefolder: the tree at `root` resized to `size`; `fingerprint` (its files' identity) only
    keys this cache, so a changed folder is read again."""
    return dataset_info(dataset, root, size).load(seed)


def experiment_arrays(cfg: Config) -> tuple[DatasetInfo, Arrays]:
    """A config's dataset facts (imagefolder: with mean and std of its training images) and
    raw tensors."""
    info = cfg.info
    if cfg.dataset != IMAGEFOLDER:
        return info, load_arrays(cfg.dataset, cfg.seed)
    arrays = load_arrays(cfg.dataset, cfg.seed, cfg.dataset_root, cfg.image_size,
                         info.fingerprint)
    mean, std = _folder_stats(cfg.dataset_root, cfg.image_size, info.fingerprint, cfg.seed)
    return dataclasses.replace(info, mean=mean, std=std), arrays


@functools.lru_cache(maxsize=4)
def _folder_stats(root: str, size: int, fingerprint: str, seed: int):
    """Per-channel mean and std of an imagefolder's training images, computed once."""
    return channel_stats(load_arrays(IMAGEFOLDER, seed, root, size, fingerprint)[0])


def trigger_size(cfg: Config) -> int:
    return cfg.scenario.trigger_size or max(2, cfg.info.size // 8)


def stamp_trigger(x: torch.Tensor, size: int) -> torch.Tensor:
    """A white size x size square in the bottom-right corner (a copy; x is not changed)."""
    out = x.clone()
    out[..., -size:, -size:] = 255
    return out


def build_experiment(cfg: Config) -> Experiment:
    info, (x_tr, y_tr, x_te, y_te) = experiment_arrays(cfg)
    sc, n = cfg.scenario, len(y_tr)
    gen = torch.Generator().manual_seed(cfg.seed)
    no_test_forgotten = torch.zeros(len(y_te), dtype=torch.bool)

    if sc.kind == "class":
        classes = torch.tensor(sorted(set(sc.classes)))
        return Experiment(info, x_tr, y_tr, torch.isin(y_tr, classes), x_te, y_te,
                          torch.isin(y_te, classes), y_tr)

    n_forget = round(sc.fraction * n)
    if sc.kind == "random":
        forget = torch.zeros(n, dtype=torch.bool)
        forget[torch.randperm(n, generator=gen)[:n_forget]] = True
        return Experiment(info, x_tr, y_tr, forget, x_te, y_te, no_test_forgotten, y_tr)

    # backdoor: relabelling a target-class sample changes nothing, so draw from the others
    eligible = (y_tr != sc.target).nonzero().squeeze(1)
    if n_forget > len(eligible):
        raise ConfigError("scenario.fraction", f"only {len(eligible)} samples are outside the "
                          f"target class; use a fraction of at most {len(eligible) / n:.2f}")
    chosen = eligible[torch.randperm(len(eligible), generator=gen)[:n_forget]]
    forget = torch.zeros(n, dtype=torch.bool)
    forget[chosen] = True
    size = trigger_size(cfg)
    x_poison, y_poison = x_tr.clone(), y_tr.clone()
    x_poison[chosen] = stamp_trigger(x_tr[chosen], size)
    y_poison[chosen] = sc.target
    others = y_te != sc.target
    return Experiment(info, x_poison, y_poison, forget, x_te, y_te, no_test_forgotten, y_tr,
                      stamp_trigger(x_te[others], size), y_te[others])


def normalise(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 (N, C, H, W) on any device -> float, standardised with the dataset's statistics."""
    mean = torch.tensor(info.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - mean) / std


def augment(x: torch.Tensor, info: DatasetInfo, gen: torch.Generator) -> torch.Tensor:
    """Random translation (pad by 1/8 of the side, crop back) and, for RGB, horizontal flips.

    Runs batched on x's device, uint8 in and out, so GPU training needs no DataLoader.
    """
    n, c, h, w = x.shape
    pad = max(1, info.size // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(x.device)
    rows = (off[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N,1,H,1)
    cols = (off[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N,1,1,W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    if info.channels == 3:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None]
        out = torch.where(flip, out.flip(3), out)
    return out
