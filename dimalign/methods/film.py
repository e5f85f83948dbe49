"""The feature-space film of an unlearning run: the unlearned model's penultimate features of a
fixed seeded sample (forget, retain and test), recorded at steps spread over the whole run, and
each frame placed in the film's linear view (`dimalign/film.py`).

Frames are taken at `schedule(total, frames, every)` steps: at least `frames` of them (every
step of a shorter run), step 0 being the starting model, on telemetry's points where it can.
Each frame is float16 on the CPU, a few hundred kilobytes for 750 samples.

**The budget** (`BUDGET`, 10 % of a worker's run): a frame costs one forward pass of the
sample, more than a whole step of a short run. A frame is measured at once only while what
recording has cost so far stays within that share of the run's expected time (its steps so far,
extrapolated); otherwise only the model's weights are kept (a copy, well under a millisecond for
the digits CNN) and the frame is measured after the run is done, by the `film` job the run
queues (`finish_saved`). A long run's film so grows live; a short run's is done a moment after
the run. Either way every frame is the same function of the same weights, measured on the same
kind of model, so a deferred frame is bit for bit the frame an inline one would have been.
Kept weights are capped (`KEEP_CAP`); past it frames are measured at once whatever they cost.

Frames taken so far and weights kept so far are part of the run's state (`state_dict`), so a
resumed run keeps them and records the rest exactly as an uninterrupted one would.

The forward pass runs on a shadow copy of the model in channels_last, into which each frame
copies the weights: on a CPU that format makes the pass 2.5x faster (oneDNN's max-pool
dominates NCHW), and the trained model keeps its own format, so a run with a film trains bit
for bit as one without.
"""

from __future__ import annotations

import bisect
import copy
import time
from pathlib import Path

import torch

from dimalign import checked
from dimalign.config import Config, EvalConfig
from dimalign.data import Experiment, normalise
from dimalign.film import LinearFrame
from dimalign.models import Classifier, build_model
from dimalign.run_files import FILM, FILM_PENDING

SPLITS = ("forget", "retain", "test")
BUDGET = 0.10  # a worker's run: the share of its time recording may take before it is done
KEEP_CAP = 256 * 2**20  # bytes of kept weights, beyond which frames are measured at once


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


def draw_sample(exp: Experiment, retain_rows: torch.Tensor, sizes: dict[str, int],
                device: torch.device, seed: int) -> dict:
    """The film's fixed sample: `sizes` per split, drawn with `seed` from the run's forget set,
    its retain rows and the test set (normalised inputs, labels, and where each came from)."""
    gen = torch.Generator().manual_seed(seed + 2)  # not the probe's draw (seed + 1)
    pools = {"forget": (exp.x_train, exp.y_train, exp.forget_idx),
             "retain": (exp.x_train, exp.y_train, retain_rows),
             "test": (exp.x_test, exp.y_test, torch.arange(len(exp.y_test)))}
    xs, out = [], {"rows": [], "labels": [], "splits": []}
    for split in SPLITS:
        x, y, rows = pools[split]
        rows = rows[torch.randperm(len(rows), generator=gen)[:sizes[split]]]
        xs.append(normalise(x[rows].to(device), exp.info))
        out["rows"] += rows.tolist()
        out["labels"] += y[rows].tolist()
        out["splits"] += [split] * len(rows)
    return {**out, "x": torch.cat(xs), "y": torch.tensor(out["labels"], device=device)}


class Film:
    """Records frames of a fixed `sample` (`draw_sample`) at the `steps` of a run of `total`
    steps, within `budget` (see the module's docstring). `ghosts` (the original and retrained
    models, or their weights) are measured once, when first needed, as the film's fixed layers.
    """

    def __init__(self, sample: dict, total: int, steps: list[int], ev: EvalConfig,
                 shadow: Classifier, ghosts: dict, budget: float = 1.0):
        self.x, self.y = _fast(sample["x"]), sample["y"]
        self.rows, self.labels, self.splits = sample["rows"], sample["labels"], sample["splits"]
        self.total, self.steps, self.ev, self.budget = total, steps, ev, budget
        self.shadow = shadow
        self.ghost_weights = ghosts  # name -> model or state dict, until measured
        self.ghosts: dict[str, dict] | None = None  # name -> measured features, ...
        self.view: LinearFrame | None = None
        self.frames: list[dict] = []  # {"step", "phase", "features", ..., "view"}, by step
        self.kept: list[dict] = []  # frames to measure later: {"step", "phase", "weights"}
        self.taken: set[int] = set()
        self.seconds = 0.0  # what recording has cost the run so far
        self.measured: list[float] = []  # each inline frame's cost
        self.weight_bytes: int | None = None  # one copy of the model's weights
        self.ghost_view: dict | None = None  # made by the first `bundle`

    @classmethod
    def of_run(cls, exp: Experiment, retain_rows: torch.Tensor, sizes: dict[str, int],
               device: torch.device, seed: int, total: int, frames: int, ev: EvalConfig,
               model: Classifier, ghosts: dict[str, Classifier], every: int = 0,
               budget: float = 1.0) -> Film:
        shadow = _fast(copy.deepcopy(model)).eval().requires_grad_(False)
        return cls(draw_sample(exp, retain_rows, sizes, device, seed), total,
                   schedule(total, frames, every), ev, shadow, ghosts, budget)

    def due(self, step: int) -> bool:
        return step in self.steps and step not in self.taken

    def take(self, model: Classifier, step: int, phase: str, work: float) -> bool:
        """A frame of `model` at `step`, `work` seconds into the run (recording not counted):
        measured now when the budget allows (True), else its weights kept (False)."""
        t0 = time.perf_counter()
        try:
            if self._affordable(step, work) or self._kept_bytes(model) > KEEP_CAP:
                self._ready()
                t1 = time.perf_counter()  # a frame's own cost, for the next choice
                self._record(model.state_dict(), step, phase)
                self.measured.append(time.perf_counter() - t1)
                return True
            self.kept.append({"step": step, "phase": phase, "weights": _copy(model)})
            self.taken.add(step)
            return False
        finally:
            self.seconds += time.perf_counter() - t0

    def _affordable(self, step: int, work: float) -> bool:
        if self.budget >= 1.0:
            return True
        if self.budget <= 0.0 or step == 0:  # at step 0 the run's pace is unknown
            return False
        frame = sum(self.measured) / len(self.measured) if self.measured else work / step
        passes = 1 + (len(self.ghost_weights) if self.ghosts is None else 0) \
            + (0 if self.frames else 1)  # the first inline frame also measures frame 0
        return self.seconds + passes * frame <= self.budget * work / step * self.total

    def _kept_bytes(self, model: Classifier) -> int:
        if self.weight_bytes is None:  # the model's size does not change during a run
            self.weight_bytes = sum(t.numel() * t.element_size()
                                    for t in model.state_dict().values())
        return self.weight_bytes * (len(self.kept) + 1)

    def _ready(self) -> None:
        """Ghosts measured, the view's k set, and frame 0 (its axes) measured."""
        if self.ghosts is None:
            self.ghosts = {name: self._measure(self._load(_weights(m)))
                           for name, m in self.ghost_weights.items()}
        if self.view is None:  # k: the retrained model's, the target (docs/method.md)
            reference = self.ghosts.get("retrained", self.ghosts.get("original"))
            retain = torch.tensor([s == "retain" for s in self.splits])
            self.view = LinearFrame(reference["features"].double(), retain, self.ev)
        if self.view.axes is None:
            first = next((k for k in self.kept if k["step"] == 0), None)
            if first is not None:  # kept at step 0: measured now, it gives the axes
                self.kept.remove(first)
                self._record(first["weights"], 0, first["phase"])
            elif self.frames:  # resumed, or every frame measured at once
                self.view.set_axes(self.frames[0]["features"].double())

    def _record(self, weights: dict, step: int, phase: str) -> None:
        frame = self._measure(self._load(weights))
        if self.view.axes is None:  # the starting model's top-2 retain directions: the axes
            self.view.set_axes(frame["features"].double())
        self.taken.add(step)
        at = bisect.bisect([f["step"] for f in self.frames], step)
        self.frames.insert(at, {"step": step, "phase": phase, **frame,
                                "view": self.view.place(frame["features"].double())})

    def finish(self, progress=None) -> dict:
        """Measures every kept frame (the `film` job's work): the whole film's bundle."""
        self._ready()
        for i, kept in enumerate(list(self.kept)):
            self._record(kept["weights"], kept["step"], kept["phase"])
            self.kept.remove(kept)
            if progress is not None:
                progress(i + 1)
        return self.bundle()

    def _load(self, weights: dict) -> Classifier:
        self.shadow.load_state_dict(weights)
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

    def state_dict(self) -> dict:
        return {"frames": [dict(f) for f in self.frames],
                "kept": [dict(k) for k in self.kept], "seconds": self.seconds}

    def load_state_dict(self, state: dict | list) -> None:
        if isinstance(state, list):  # a checkpoint from before frames could be kept
            state = {"frames": state}
        self.frames = [dict(f) for f in state["frames"]]
        self.kept = [dict(k) for k in state.get("kept", [])]
        self.taken = {f["step"] for f in self.frames} | {k["step"] for k in self.kept}
        self.seconds = state.get("seconds", 0.0)

    def saved(self, cfg: Config) -> dict:
        """What the `film` job needs to finish this film (`FILM_PENDING`): the sample, the
        frames, the kept weights, the ghosts (or their weights) and the run's config."""
        ghosts = self.ghosts if self.ghosts is not None else None
        weights = None if ghosts is not None else {
            name: _copy(m) if isinstance(m, torch.nn.Module) else m
            for name, m in self.ghost_weights.items()}
        return {"config": cfg.to_dict(), "total": self.total, "steps": list(self.steps),
                "sample": {"x": self.x.contiguous().cpu(), "y": self.y.cpu(), "rows": self.rows,
                           "labels": self.labels, "splits": self.splits},
                "ghosts": ghosts, "ghost_weights": weights, **self.state_dict()}

    @classmethod
    def from_saved(cls, saved: dict, device: torch.device) -> Film:
        from dimalign.config import config_from_dict

        cfg = config_from_dict(saved["config"])
        info = cfg.info
        shadow = build_model(cfg.model_name, info.channels, info.num_classes, info.size)
        shadow = _fast(shadow.to(device)).eval().requires_grad_(False)
        sample = {**saved["sample"], "x": saved["sample"]["x"].to(device),
                  "y": saved["sample"]["y"].to(device)}
        film = cls(sample, saved["total"], saved["steps"], cfg.eval, shadow,
                   saved["ghost_weights"] or {})
        film.ghosts = saved["ghosts"]
        film.load_state_dict(saved)
        return film

    def bundle(self, complete: bool = True) -> dict:
        """What the run keeps (`run_files.FILM`): the sample, every frame so far and its linear
        view, the ghosts, and the steps of frames still to measure ("pending"). `complete` is
        False for the copy a live run writes as it goes: what the page draws, without the raw
        features (only a finished film's UMAP job reads those)."""
        self._ready()
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
               "k": self.view.k, "total": self.total, "complete": complete,
               "pending": sorted(k["step"] for k in self.kept)}
        if complete:
            return {**out, "features": torch.stack([f["features"] for f in frames])}
        return {**out, "ghosts": {name: {k: v for k, v in g.items() if k != "features"}
                                  for name, g in self.ghosts.items()}}


def frames_left(folder: Path) -> bool:
    """Whether a run's film still has kept frames to measure: its `FILM_PENDING` is there and
    its film is missing or names steps still pending (on a Ray head the kept file outlives the
    job, which ran on a node: the film it sent back says it is whole)."""
    if not (folder / FILM_PENDING).exists():
        return False
    try:
        return bool(checked.load_torch(folder / FILM).get("pending"))
    except FileNotFoundError:
        return True


def finish_saved(folder: Path, device: torch.device | None = None,
                 progress=None) -> tuple[Path, torch.device]:
    """Measures a finished run's kept frames (`FILM_PENDING`, the `film` job's work) on
    `device` (the run's own setting by default), writes its whole film (`FILM`) and removes
    the kept weights. Returns the film's path and the device."""
    from dimalign.train import pick_device

    try:
        saved = checked.load_torch(folder / FILM_PENDING)
    except FileNotFoundError:  # measured meanwhile (its job, an export, the CLI): it is whole
        return folder / FILM, device or torch.device("cpu")
    if device is None:
        device = pick_device(saved["config"].get("device", "auto"))
    film = Film.from_saved(saved, device)
    total = len(film.kept)
    bundle = film.finish(None if progress is None else lambda i: progress(i / max(total, 1)))
    checked.save_torch(bundle, folder / FILM)  # the same bytes whoever measured it first
    checked.remove(folder / FILM_PENDING)
    return folder / FILM, device


def _weights(m) -> dict:
    return m.state_dict() if isinstance(m, torch.nn.Module) else m


def _copy(model: Classifier) -> dict:
    """The model's weights as they are now, on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _fast(t):
    """channels_last for image batches and conv models (see the module's docstring)."""
    if isinstance(t, torch.Tensor):
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    return t.to(memory_format=torch.channels_last)
