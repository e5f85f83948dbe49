"""Live telemetry of an unlearning run: loss averages at a cadence, and a probe of fixed small
subsets measured at some of those points (accuracies, DA, principal angles)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from dimalign.config import EvalConfig
from dimalign.data import Experiment, normalise
from dimalign.geometry import angles_between, top_basis
from dimalign.metrics import alignment
from dimalign.models import Classifier

TelemetryFn = Callable[[dict], None]

# Share of a run's own time (telemetry excluded) that telemetry may spend before it measures the
# probe at fewer points; points in between carry the step's losses and phase only.
PROBE_SHARE = 0.15


class Probe:
    """Fixed small subsets of D_r, D_f and D_t that telemetry evaluates at a point: accuracy on
    each, and DA and the smallest principal angles of forget against retain features, with the
    run's evaluation settings (`eval.energy`, `eval.k`, `eval.center`) as the final metrics."""

    def __init__(self, exp: Experiment, retain_rows: torch.Tensor, size: int,
                 device: torch.device, seed: int, ev: EvalConfig):
        gen = torch.Generator().manual_seed(seed + 1)
        self.ev = ev

        def pick(x, y, rows):
            rows = rows[torch.randperm(len(rows), generator=gen)[:size]]
            return normalise(x[rows].to(device), exp.info), y[rows].to(device)

        sets = {"retain": pick(exp.x_train, exp.y_train, retain_rows),
                "forget": pick(exp.x_train, exp.y_train, exp.forget_idx),
                "test": pick(exp.x_test, exp.y_test, torch.arange(len(exp.y_test)))}
        # one batch for all three: in eval mode BatchNorm treats samples independently
        self.x = torch.cat([x for x, _ in sets.values()])
        self.y = torch.cat([y for _, y in sets.values()])
        self.sizes = {name: len(y) for name, (_, y) in sets.items()}

    @torch.inference_mode()
    def measure(self, model: Classifier) -> dict[str, float]:
        was_training = model.training
        model.eval()
        feats_all = model.features(self.x).float()  # (N, C)
        hits_all = model.head(feats_all).argmax(1) == self.y
        model.train(was_training)
        sizes = list(self.sizes.values())
        feats = dict(zip(self.sizes, feats_all.split(sizes), strict=True))
        out = {f"acc_{name}": hits.float().mean().item()
               for name, hits in zip(self.sizes, hits_all.split(sizes), strict=True)}
        try:
            out["da"], basis_r = alignment(feats["forget"], feats["retain"], self.ev)
            angles = angles_between(top_basis(feats["forget"], self.ev.energy).vectors,
                                    basis_r.vectors)
            for i, a in enumerate(angles[:3].tolist()):
                out[f"angle_{i + 1}"] = a
        except ValueError:  # all-zero features (dead units): leave DA out of this point
            pass
        return out


class Telemetry:
    """Sends a point every `every` steps (and at each phase's last step): the mean of each loss
    term since the last point, the phase, and the probe while it stays within PROBE_SHARE."""

    def __init__(self, send: TelemetryFn, probe: Probe, every: int, total: int):
        self.send, self.probe, self.every, self.total = send, probe, every, total
        self.window: dict[str, list[float]] = {}
        self.records: list[dict] = []
        self.probe_seconds = 0.0  # what the last probe took

    def due(self, step: int, phase_ends: bool) -> bool:
        # also at a phase's last step, so the curves shade phases shorter than `every`
        return step % self.every == 0 or step == self.total or phase_ends

    def add_losses(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.window.setdefault(name, []).append(value)

    def report(self, model: Classifier, step: int, epoch: int, phase: str, own: float,
               spent: float) -> float:
        """Send one point; `own` is the run's time so far without telemetry, `spent` what
        telemetry took so far. Returns the seconds this point took."""
        t0 = time.perf_counter()
        # the phase as a number too: the run store keeps numbers only (the curves shade phases)
        point = {"step": step, "epoch": epoch + 1, "phase": phase, f"phase_{phase}": 1.0,
                 "seconds": own}
        point.update({f"loss_{k}": sum(v) / len(v) for k, v in self.window.items()})
        # the probe costs about one training step on a small model: it runs at the first and
        # last points, and at the others while telemetry stays within PROBE_SHARE of the run
        if step in (0, self.total) or spent + self.probe_seconds <= PROBE_SHARE * own:
            t1 = time.perf_counter()
            point.update(self.probe.measure(model))
            self.probe_seconds = time.perf_counter() - t1
        self.window.clear()
        self.records.append(point)
        self.send(point)
        return time.perf_counter() - t0
