"""The feature-space film of an unlearning run: the unlearned model's penultimate features of a
fixed seeded sample (forget, retain and test), recorded at steps spread over the whole run, and
each frame placed at once in the film's linear view (`dimalign/film.py`).

Frames are taken at `schedule(total, frames, every)` steps: at least `frames` of them (every
step of a shorter run), step 0 being the starting model, on telemetry's points where it can.
Each frame is float16 on the CPU, a few hundred kilobytes for 750 samples. The frames taken so
far are part of the run's state (`state_dict`), so a resumed run keeps them and records the rest
exactly as an uninterrupted one would.

Recording costs one forward pass of the sample per frame. It runs on a shadow copy of the model
in channels_last, into which each frame copies the weights (about 0.1 ms for the digits CNN):
on a CPU that format makes the pass 2.5x faster (oneDNN's max-pool dominates NCHW), and the
trained model keeps its own format, so a run with a film trains bit for bit as one without.
"""

from __future__ import annotations

import copy

import torch

from dimalign.config import EvalConfig
from dimalign.data import Experiment, normalise
from dimalign.film import LinearFrame
from dimalign.models import Classifier

SPLITS = ("forget", "retain", "test")


def schedule(total: int, frames: int, every: int = 0) -> list[int]:
    """The steps a run of `total` steps records a frame at: 0, `total` and `frames - 2` spread
    evenly between them (every step when the run has fewer). With telemetry every `every`
    steps, each lands on the nearest telemetry point, so frames and curves share steps, unless
    the points are too few to hold `frames` distinct frames."""
    if total + 1 <= frames:
        return list(range(total + 1))
    spread = [i * total / (frames - 1) for i in range(frames)]
    if every > 0:
        def nearest(s: float) -> int:  # telemetry's points: multiples of `every`, and `total`
            m = round(s / every) * every
            return total if m > total or total - s < abs(m - s) else m

        snapped = sorted({nearest(s) for s in spread})
        if len(snapped) == frames:
            return snapped
    return sorted({round(s) for s in spread})


class Film:
    """Records frames of a fixed sample: `sizes` per split (forget, retain, test), drawn with
    `seed` from the run's forget set, its retain rows and the test set. `ghosts` (the original
    and retrained models) are recorded once, at the start, as the film's fixed layers."""

    def __init__(self, exp: Experiment, retain_rows: torch.Tensor, sizes: dict[str, int],
                 device: torch.device, seed: int, total: int, frames: int, ev: EvalConfig,
                 model: Classifier, ghosts: dict[str, Classifier], every: int = 0):
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
        self.x = _fast(torch.cat(xs))
        self.y = torch.tensor(self.labels, device=device)
        self.total, self.steps = total, schedule(total, frames, every)
        self.shadow = _fast(copy.deepcopy(model)).eval().requires_grad_(False)
        self.ghosts = {name: self._measure(self._load(m)) for name, m in ghosts.items()}
        retain = torch.tensor([s == "retain" for s in self.splits])
        # the retain eigenspace's size: the retrained model's, the target (docs/method.md)
        reference = self.ghosts.get("retrained", self.ghosts.get("original"))
        self.view = LinearFrame(reference["features"].double(), retain, ev)
        self.frames: list[dict] = []  # {"step", "phase", "features", "confidence", "view"}
        self.taken: set[int] = set()
        self.ghost_view: dict | None = None  # made by the first `bundle`

    def due(self, step: int) -> bool:
        return step in self.steps and step not in self.taken

    def record(self, model: Classifier, step: int, phase: str) -> None:
        """Take a frame of `model` now, on the shadow (see the module's docstring)."""
        frame = self._measure(self._load(model))
        if self.view.axes is None:  # the starting model's top-2 retain directions: the axes
            self.view.set_axes(frame["features"].double())
        self.taken.add(step)
        self.frames.append({"step": step, "phase": phase, **frame,
                            "view": self.view.place(frame["features"].double())})

    def _load(self, model: Classifier) -> Classifier:
        self.shadow.load_state_dict(model.state_dict())
        return self.shadow

    @torch.inference_mode()
    def _measure(self, model: Classifier) -> dict:
        was_training = model.training
        model.eval()  # BatchNorm then treats samples independently: one batch for all
        feats = model.features(self.x).float()  # (N, C)
        logits = model.head(feats)
        confidence = logits.softmax(1).gather(1, self.y[:, None])[:, 0]
        model.train(was_training)
        return {"features": feats.to(torch.float16).cpu(),
                "confidence": confidence.to(torch.float16).cpu(),
                "predicted": logits.argmax(1).to(torch.int16).cpu()}

    def state_dict(self) -> list[dict]:
        return [dict(f) for f in self.frames]

    def load_state_dict(self, frames: list[dict]) -> None:
        self.frames = [dict(f) for f in frames]
        self.taken = {f["step"] for f in frames}
        if frames:
            self.view.set_axes(frames[0]["features"].double())

    def bundle(self, complete: bool = True) -> dict:
        """What the run keeps (`run_files.FILM`): the sample, every frame and its linear view,
        and the ghosts. `complete` is False for the copy a live run writes as it goes: what the
        page draws, without the raw features (only a finished film's UMAP job reads those)."""
        frames = self.frames
        views = [f["view"] for f in frames]
        if self.ghost_view is None:  # fixed once frame 0 is: the ghosts turned onto it
            self.ghost_view = {name: self.view.place_ghost(g["features"].double(),
                                                           frames[0]["features"].double())
                               for name, g in self.ghosts.items()}
        out = {"rows": self.rows, "labels": self.labels, "splits": self.splits,
               "steps": [f["step"] for f in frames],
               "phases": [f["phase"] for f in frames],
               "confidence": torch.stack([f["confidence"] for f in frames]),
               "predicted": torch.stack([f["predicted"] for f in frames]),
               "view": {k: torch.stack([v[k] for v in views]) for k in views[0]},
               "ghosts": self.ghosts, "ghost_view": self.ghost_view,
               "k": self.view.k, "total": self.total, "complete": complete}
        if complete:
            return {**out, "features": torch.stack([f["features"] for f in frames])}
        return {**out, "ghosts": {name: {k: v for k, v in g.items() if k != "features"}
                                  for name, g in self.ghosts.items()}}


def _fast(t):
    """channels_last for image batches and conv models (see the module's docstring)."""
    if isinstance(t, torch.Tensor):
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    return t.to(memory_format=torch.channels_last)
