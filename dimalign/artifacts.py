"""Per-run geometry for the dashboard: spectra, principal angles, DA and a fixed, seeded
subsample of features per model, computed once when a run is evaluated and saved with it, so
pages never recompute them. Saved as plain tensors with a sha256 sidecar, loaded with
`weights_only=True`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from dimalign import checked
from dimalign.config import EvalConfig
from dimalign.data import Experiment
from dimalign.geometry import (
    DegenerateFeatures,
    angles_between,
    effective_rank,
    eigenspectrum,
    top_basis,
)
from dimalign.memo import LRU
from dimalign.metrics import Outputs, alignment

SPLITS = ("retain", "forget", "test")


def split_rows(exp: Experiment) -> dict[str, tuple[str, torch.Tensor]]:
    """Each split as (which output it lives in, row indices there)."""
    return {"retain": ("train", exp.retain_idx), "forget": ("train", exp.forget_idx),
            "test": ("test", torch.arange(len(exp.y_test)))}


def subsample(exp: Experiment, size: int, seed: int) -> dict[str, torch.Tensor]:
    """The same seeded rows of every split for every model (so their manifolds align)."""
    gen = torch.Generator().manual_seed(seed)
    picked = {}
    for split, (_, rows) in split_rows(exp).items():
        order = torch.randperm(len(rows), generator=gen)[:size]
        picked[split] = rows[order.sort().values]
    return picked


def _spectra(feats: torch.Tensor) -> dict[str, torch.Tensor | None]:
    out = {}
    for name, center in (("plain", False), ("centered", True)):
        try:
            out[name] = eigenspectrum(feats, center=center).values.float()
        except ValueError:  # e.g. one forget sample has no centred spectrum
            out[name] = None
    return out


def _effective_rank(feats: torch.Tensor, center: bool) -> float:
    try:
        return effective_rank(feats, center)
    except DegenerateFeatures:
        return float("nan")


def model_geometry(out: Outputs, exp: Experiment, ev: EvalConfig,
                   rows: dict[str, torch.Tensor]) -> dict:
    feats = {"train": out.feats_train, "test": out.feats_test}
    logits = {"train": out.logits_train, "test": out.logits_test}
    split = {s: feats[src][idx] for s, (src, idx) in split_rows(exp).items()}
    spectra = {s: _spectra(f) for s, f in split.items()}
    try:
        da, basis_r = alignment(split["forget"], split["retain"], ev)
        basis_f = top_basis(split["forget"], ev.energy)
        angles = angles_between(basis_f.vectors, basis_r.vectors).float()
        k_retain, k_forget = basis_r.k, basis_f.k
    except DegenerateFeatures:  # a collapsed model: no subspaces to compare
        da, angles, k_retain, k_forget = float("nan"), torch.full((1,), float("nan")), 0, 0
    src = {s: src for s, (src, _) in split_rows(exp).items()}
    return {
        "spectra": spectra,
        "effective_rank": {s: _effective_rank(f, ev.center) for s, f in split.items()},
        "angles": angles,
        "k_retain": k_retain,
        "k_forget": k_forget,
        "da": da,
        "features": {s: feats[src[s]][rows[s]].float() for s in SPLITS},
        "predictions": {s: logits[src[s]][rows[s]].argmax(1) for s in SPLITS},
    }


GEOMETRY: LRU[dict] = LRU(4)  # the baselines' geometry, in a warm worker


def geometry_bundle(outs: dict[str, Outputs], exp: Experiment, ev: EvalConfig,
                    seed: int, ids: dict[str, str] | None = None) -> dict:
    """`ids`: checkpoint identities of models whose geometry is computed once per process."""
    ids = ids or {}
    rows = subsample(exp, ev.feature_samples, seed)

    def geometry(name: str) -> dict:
        make = lambda: model_geometry(outs[name], exp, ev, rows)  # noqa: E731
        return GEOMETRY.get_or_make((ids[name], ev, seed), make) if name in ids else make()

    labels = {"train": exp.y_clean, "test": exp.y_test}
    src = {s: src for s, (src, _) in split_rows(exp).items()}
    return {
        "settings": dataclasses.asdict(ev),
        "rows": rows,  # indices into the train (retain, forget) or test tensors
        "labels": {s: labels[src[s]][rows[s]] for s in SPLITS},
        "models": {name: geometry(name) for name in outs},
    }


def save_bundle(bundle: dict, path: Path) -> None:
    """Atomic write with a sha256 sidecar (`dimalign.checked`): a reader never sees half a
    file, and later damage is found when it is read."""
    checked.save_torch(bundle, path)


def load_bundle(path: Path) -> dict:
    """A saved bundle, checked: DamagedFile (the file set aside) when it is damaged."""
    return checked.load_torch(path)
