"""The feature-space film of an unlearning run: the unlearned model's penultimate features of a
fixed seeded sample (forget, retain and test), recorded at steps spread over the whole run.

Frames are taken at `schedule(total, frames)` steps: at least `frames` of them (every step of a
shorter run), step 0 being the starting model. Each frame is float16 on the CPU, a few hundred
kilobytes for 750 samples. The frames taken so far are part of the run's state (`state_dict`),
so a resumed run keeps them and records the rest exactly as an uninterrupted one would.
"""

from __future__ import annotations

import torch

from dimalign.data import Experiment, normalise
from dimalign.models import Classifier

SPLITS = ("forget", "retain", "test")


def schedule(total: int, frames: int) -> list[int]:
    """The steps a run of `total` steps records a frame at: 0, `total` and `frames - 2` spread
    evenly between them (every step when the run has fewer)."""
    if total + 1 <= frames:
        return list(range(total + 1))
    return sorted({round(i * total / (frames - 1)) for i in range(frames)})


class Film:
    """Records frames of a fixed sample: `sizes` per split (forget, retain, test), drawn with
    `seed` from the run's forget set, its retain rows and the test set."""

    def __init__(self, exp: Experiment, retain_rows: torch.Tensor, sizes: dict[str, int],
                 device: torch.device, seed: int, total: int, frames: int):
        gen = torch.Generator().manual_seed(seed + 2)  # not the probe's draw (seed + 1)
        pools = {"forget": (exp.x_train, exp.y_train, exp.forget_idx),
                 "retain": (exp.x_train, exp.y_train, retain_rows),
                 "test": (exp.x_test, exp.y_test, torch.arange(len(exp.y_test)))}
        xs, self.rows, self.labels, self.splits = [], [], [], []
        for split in SPLITS:
            x, y, rows = pools[split]
            rows = rows[torch.randperm(len(rows), generator=gen)[:sizes[split]]]
            xs.append(normalise(x[rows].to(device), exp.info))
            self.rows += rows.tolist()
            self.labels += y[rows].tolist()
            self.splits += [split] * len(rows)
        self.x = torch.cat(xs)
        self.steps = schedule(total, frames)
        self.frames: list[dict] = []  # {"step", "phase", "features": (N, C) float16}

    def due(self, step: int) -> bool:
        return step in self.steps and not any(f["step"] == step for f in self.frames)

    @torch.inference_mode()
    def record(self, model: Classifier, step: int, phase: str) -> None:
        was_training = model.training
        model.eval()  # BatchNorm then treats samples independently: one batch for all
        feats = model.features(self.x).float()
        probs = model.head(feats).softmax(1)
        labels = torch.tensor(self.labels, device=probs.device)
        confidence = probs.gather(1, labels[:, None])[:, 0]  # on each sample's own label
        model.train(was_training)
        self.frames.append({"step": step, "phase": phase,
                            "features": feats.to(torch.float16).cpu(),
                            "confidence": confidence.to(torch.float16).cpu()})

    def state_dict(self) -> list[dict]:
        return [dict(f) for f in self.frames]

    def load_state_dict(self, frames: list[dict]) -> None:
        self.frames = [dict(f) for f in frames]

    def bundle(self) -> dict:
        """What the run keeps (`run_files.FILM`): the sample and every frame."""
        return {"rows": self.rows, "labels": self.labels, "splits": self.splits,
                "steps": [f["step"] for f in self.frames],
                "phases": [f["phase"] for f in self.frames],
                "features": torch.stack([f["features"] for f in self.frames]),
                "confidence": torch.stack([f["confidence"] for f in self.frames])}
