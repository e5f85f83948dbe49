"""The one unlearning loop every method shares: prepare, then the step loop, then the result.

The loop owns the optimiser, epochs, device, batches, the progress and telemetry callbacks,
cancellation, NaN detection and checkpoints. A method supplies its phases and the loss of one
step. A run's whole state is one `RunState`: a checkpoint is its `state_dict()`, and resuming
loads it into a freshly prepared run, which then continues bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import reprlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dimalign.config import Config
from dimalign.data import Experiment, normalise
from dimalign.geometry import DegenerateFeatures
from dimalign.methods import BUILTIN
from dimalign.methods.base import Batch, Context, MethodSpec, Phase
from dimalign.methods.film import Film
from dimalign.methods.run_state import RunState, Stream
from dimalign.methods.telemetry import Probe, Telemetry, TelemetryFn
from dimalign.models import Classifier, build_model
from dimalign.train import Progress, ProgressFn, warm_up

__all__ = ["BrokenMethod", "Cancelled", "TelemetryFn", "UnlearnResult", "UnlearningFailed",
           "prepare", "unlearn"]


class Cancelled(Exception):
    """The run was cancelled; nothing was kept."""


class UnlearningFailed(RuntimeError):
    """The run diverged: a loss term became NaN or infinite, or the features collapsed (all
    zero, NaN or infinite) so that a loss could not be computed; the message names the step,
    the loss term where one is known, and the knob to lower."""


class BrokenMethod(RuntimeError):
    """A method's loss (a plugin's, in practice) returned something other than named scalar
    loss tensors; the message names the method and what it returned."""


def _check_terms(spec: MethodSpec, terms) -> None:
    """One line naming what came back, not a traceback deep in the loop."""
    if isinstance(terms, dict) and terms and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) and v.numel() == 1
            for k, v in terms.items()):
        return
    who = "method" if spec.name in BUILTIN else "plugin method"
    got = " ".join(reprlib.repr(terms).split())  # short, on one line
    raise BrokenMethod(f"{who} {spec.name!r} step returned {type(terms).__name__} {got}; "
                       "expected a dict of named scalar loss tensors, e.g. {'ce': loss}")


@dataclass
class UnlearnResult:
    model: Classifier
    seconds: float  # wall time of the whole method, telemetry included
    telemetry_seconds: float  # of which telemetry
    steps: int
    params: dict
    telemetry: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # the method's own state (e.g. SalUn's mask)
    film: dict | None = None  # the recorded frames (Film.bundle), None without a film
    film_seconds: float = 0.0  # what recording them took
    film_kept: dict | None = None  # frames still to measure (Film.saved), for the film job


@dataclass
class Prepared:
    """A run ready for its first step: what `prepare` builds and the step loop advances."""

    spec: MethodSpec
    params: dict
    ctx: Context
    state: RunState
    plan: list[list[Phase]]  # the phases of every epoch
    total: int  # optimiser steps in the whole run
    retain_rows: torch.Tensor  # the rows of D_r the method may use (after retain_fraction)


def _optimizer(params: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    # weight decay is added to the gradients by the loop, so gradient masks cover it too
    if params["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=params["lr"])
    return torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"])


def prepare(cfg: Config, spec: MethodSpec, exp: Experiment, original: Classifier,
            device: torch.device, init: Classifier | None = None) -> Prepared:
    """Model, teacher, batch streams, method setup, optimiser and schedule, all seeded."""
    params = spec.resolve(cfg.methods.get(spec.name, {}))
    gen = torch.Generator().manual_seed(cfg.train_seed)  # a replicate draws its own
    torch.manual_seed(cfg.train_seed)
    cuda = device.type == "cuda"
    model = copy.deepcopy(init if init is not None else original).to(device).train()
    teacher = copy.deepcopy(original).to(device).eval().requires_grad_(False)

    retain_rows = exp.retain_idx
    n_keep = max(1, math.ceil(params["retain_fraction"] * len(retain_rows)))
    retain_rows = retain_rows[torch.randperm(len(retain_rows), generator=gen)[:n_keep].sort()[0]]
    forget_rows = exp.forget_idx
    rows_of = {"forget": forget_rows, "retain": retain_rows}
    streams = {name: Stream(exp.x_train[rows], exp.y_train[rows], params["batch_size"],
                            exp.info, device, gen, cuda, params["augment"])
               for name, rows in rows_of.items()}
    ctx = Context(model, teacher, params, exp.info.num_classes, len(forget_rows), n_keep, device,
                  gen)
    ctx.fresh_model = lambda: build_model(cfg.model_name, exp.info.channels,
                                          exp.info.num_classes, exp.info.size).to(device)

    def draw(source: str) -> Batch:
        b = Batch()
        if source in ("forget", "both"):
            b.xf, b.yf = streams["forget"].next()
        if source in ("retain", "both"):
            b.xr, b.yr = streams["retain"].next()
        return b

    def full_pass(source: str):
        rows = rows_of[source]
        for start in range(0, len(rows), params["batch_size"]):
            part = rows[start:start + params["batch_size"]]
            x = normalise(exp.x_train[part].to(device), exp.info)
            b = Batch()
            if source == "forget":
                b.xf, b.yf = x, exp.y_train[part].to(device)
            else:
                b.xr, b.yr = x, exp.y_train[part].to(device)
            yield b

    ctx.draw, ctx.full_pass = draw, full_pass
    if spec.setup is not None:
        spec.setup(ctx)  # from the starting model; a resumed run then loads its saved state
    plan = [spec.phases(ctx, e) for e in range(params["epochs"])]
    total = sum(p.steps for phases in plan for p in phases)
    state = RunState(model, _optimizer(params, model), gen, streams, ctx.state, device)
    return Prepared(spec, params, ctx, state, plan, total, retain_rows)


class _LossLog:
    """A step's loss values are read (checked for NaN, logged) only after the next step has
    been queued: reading them at once would make the host wait for the device on every step."""

    def __init__(self, method: str, total: int, progress: ProgressFn | None,
                 telemetry: Telemetry | None):
        self.method, self.total, self.progress, self.telemetry = method, total, progress, \
            telemetry
        self.pending: list = []
        self.last: tuple[int, dict[str, float]] | None = None  # (step, values) last settled

    def add(self, terms: dict[str, torch.Tensor], step: int, where: str) -> None:
        values = torch.stack([t.detach().float() for t in terms.values()])
        self.settle()
        self.pending.append((values, list(terms), step, where))

    def collapsed(self, err: DegenerateFeatures, step: int, where: str) -> UnlearningFailed:
        """Divergence that shows as collapsed features (a loss needs them, e.g. MUDA's retain
        basis): named like a NaN loss, with the term that had grown largest just before."""
        m = self.method
        grown = ""
        if self.last is not None and self.last[1]:
            at, values = self.last
            name = max(values, key=lambda k: abs(values[k]))
            grown = f"; loss term '{name}' was {values[name]:.3g} at step {at}"
        return UnlearningFailed(f"{m}: diverged at step {step} ({where}): the model's features "
                                f"collapsed ({err}){grown}; lower {m}.lr or the weight of "
                                "that term")

    def settle(self) -> None:
        if not self.pending:
            return
        on_device, names, step, where = self.pending.pop()
        values = dict(zip(names, on_device.tolist(), strict=True))
        for name, value in values.items():
            if not math.isfinite(value):
                raise UnlearningFailed(
                    f"{self.method}: loss term '{name}' became {value} at step {step} "
                    f"({where}); lower {self.method}.lr or the weight of that term")
        self.last = (step, values)
        if self.telemetry is not None:
            self.telemetry.add_losses(values)
        if self.progress is not None:
            # one schedule of `total` steps (epochs of a method differ in length)
            self.progress(Progress("unlearn", 1, 1, step, self.total, sum(values.values())))


def _step(run: Prepared, phase: Phase, cuda: bool) -> dict[str, torch.Tensor]:
    """One optimiser step of the method's loss; returns its (weighted) terms."""
    spec, ctx, opt = run.spec, run.ctx, run.state.optimizer
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cuda):
        terms = spec.loss(ctx, phase, ctx.draw(phase.source))
    _check_terms(spec, terms)
    opt.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    if wd := run.params["weight_decay"]:
        held = [p for p in ctx.model.parameters() if p.grad is not None]
        torch._foreach_add_([p.grad for p in held], [p.detach() for p in held], alpha=wd)
    if spec.grad_hook is not None:
        spec.grad_hook(ctx)
    opt.step()
    return terms


def _stdout_to_stderr(run: Callable) -> Callable:
    """What a method prints (a plugin's setup or steps) goes to stderr: stdout holds
    `--json`'s one object. Harmless in a worker, whose streams both go to the log."""

    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        with contextlib.redirect_stdout(sys.stderr):
            return run(*args, **kwargs)

    return wrapped


@_stdout_to_stderr
def unlearn(cfg: Config, spec: MethodSpec, exp: Experiment, original: Classifier,
            device: torch.device, *, progress: ProgressFn | None = None,
            telemetry: TelemetryFn | None = None, cancel: Callable[[], bool] | None = None,
            init: Classifier | None = None, checkpoint: Callable[[dict], None] | None = None,
            resume: dict | None = None, retrained: Classifier | None = None,
            on_frame: Callable[[Callable[[], dict]], None] | None = None,
            film_budget: float = 1.0) -> UnlearnResult:
    """Run one method from the original model (or from `init`, for forks). The returned model
    is new; `original` is never changed.

    `checkpoint` receives the run's whole state (`RunState.state_dict()`) after every epoch;
    passing such a state back as `resume` continues the run from there, bit for bit.

    Given the `retrained` model, the run records its film (`eval.film_frames`, its ghosts being
    the original and retrained models); `on_frame` then receives, after each frame, a function
    that makes the film so far (its bundle), for a page to show it live. Frames beyond
    `film_budget` (a share of the run's time; 1 = every frame at once) are left for the `film`
    job (`methods/film.py`): the result's `film_kept`.
    """
    run = prepare(cfg, spec, exp, original, device, init)
    warm_up(original, normalise(exp.x_train[: run.params["batch_size"]].to(device), exp.info))
    state, ctx, total = run.state, run.ctx, run.total
    if resume is not None:
        state.load_state_dict(resume)
    every = cfg.unlearn.cadence(total)
    tele = None
    if telemetry is not None and every > 0:
        probe = Probe(exp, run.retain_rows, cfg.unlearn.telemetry_samples, device, cfg.seed,
                      cfg.eval)
        tele = Telemetry(telemetry, probe, every, total)
    film = _film(cfg, exp, run, device, total, original, retrained, film_budget)
    if film is not None and resume is not None:
        film.load_state_dict(resume.get("film", []))
    cuda = device.type == "cuda"
    began = time.perf_counter() - state.seconds  # the clock runs on across a resume
    log = _LossLog(spec.name, total, progress, tele)

    def shoot(phase: str) -> None:
        if film is None or not film.due(state.step):
            return
        work = time.perf_counter() - began - film.seconds
        if film.take(ctx.model, state.step, phase, work) and on_frame is not None:
            on_frame(lambda: film.bundle(complete=False))

    def report(epoch: int, phase: str) -> None:
        elapsed = time.perf_counter() - began
        state.telemetry_seconds += tele.report(ctx.model, state.step, epoch, phase,
                                               elapsed - state.telemetry_seconds,
                                               state.telemetry_seconds)

    if tele is not None and resume is None:
        report(-1, "start")
    shoot("start")
    for epoch in range(state.epoch, len(run.plan)):
        for phase in run.plan[epoch]:
            for left in range(phase.steps - 1, -1, -1):
                if cancel is not None and cancel():
                    raise Cancelled(f"cancelled at step {state.step} of {total}")
                ctx.state["progress"], ctx.state["epoch"] = state.step / total, epoch
                try:
                    terms = _step(run, phase, cuda)
                except Exception as err:
                    log.settle()  # a diverged previous step explains the error better
                    if isinstance(err, DegenerateFeatures):
                        raise log.collapsed(err, state.step + 1, f"epoch {epoch + 1}, "
                                            f"{phase.name} phase") from err
                    raise
                state.step += 1
                log.add(terms, state.step, f"epoch {epoch + 1}, {phase.name} phase")
                shoot(phase.name)
                if tele is not None and tele.due(state.step, left == 0):
                    log.settle()
                    report(epoch, phase.name)
        log.settle()
        state.epoch = epoch + 1
        if checkpoint is not None:
            state.seconds = time.perf_counter() - began
            saved = state.state_dict()
            if film is not None:  # the frames so far: a resumed run keeps them
                saved["film"] = film.state_dict()
            checkpoint(saved)
    ctx.model.eval()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    reel, kept, film_seconds = None, None, 0.0
    if film is not None:
        t0 = time.perf_counter()
        if film.frames:  # with frames still kept, what a page draws until the film job's done
            reel = film.bundle(complete=not film.kept)
        kept = film.saved(cfg) if film.kept else None
        film_seconds = film.seconds + time.perf_counter() - t0
    return UnlearnResult(ctx.model, seconds, state.telemetry_seconds, state.step, run.params,
                         tele.records if tele else [], ctx.state, reel, film_seconds, kept)


def _film(cfg: Config, exp: Experiment, run: Prepared, device: torch.device, total: int,
          original: Classifier, retrained: Classifier | None, budget: float) -> Film | None:
    ev = cfg.eval
    if not ev.film_frames or retrained is None:
        return None
    sizes = {"forget": ev.film_forget, "retain": ev.film_retain, "test": ev.film_test}
    return Film.of_run(exp, run.retain_rows, sizes, device, cfg.seed, total, ev.film_frames,
                       ev, run.ctx.model, {"original": original, "retrained": retrained},
                       cfg.unlearn.cadence(total), budget)
