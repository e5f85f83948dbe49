"""The one unlearning loop every method shares.

It owns the optimiser, epochs, device, batches, the progress and telemetry callbacks,
cancellation and NaN detection. A method supplies its phases and the loss of one step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dimalign.config import Config
from dimalign.data import Experiment, normalise
from dimalign.geometry import angles_between, dimensional_alignment, top_basis
from dimalign.methods.base import Batch, Context, MethodSpec
from dimalign.models import Classifier, build_model
from dimalign.train import Progress, ProgressFn, warm_up

TelemetryFn = Callable[[dict], None]


class Cancelled(Exception):
    """The run was cancelled; nothing was kept."""


class UnlearningFailed(RuntimeError):
    """The loss diverged (NaN or inf); the message names the step and the loss term."""


@dataclass
class UnlearnResult:
    model: Classifier
    seconds: float  # wall time of the whole method, telemetry included
    telemetry_seconds: float  # of which telemetry
    steps: int
    params: dict
    telemetry: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # the method's own state (e.g. SalUn's mask)


class Stream:
    """Endless shuffled batches of one split, kept on the device as uint8."""

    def __init__(self, x, y, batch_size, info, device, generator, channels_last):
        self.x, self.y = x.to(device), y.to(device)
        self.bs, self.info, self.gen = min(batch_size, len(y)), info, generator
        self.channels_last = channels_last
        self.order, self.pos = None, len(y)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.bs > len(self.y):
            self.order = torch.randperm(len(self.y), generator=self.gen).to(self.x.device)
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        x = normalise(self.x[idx], self.info)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]


# Share of a run's own time (telemetry excluded) that telemetry may spend before it measures the
# probe at fewer points; points in between carry the step's losses and phase only.
PROBE_SHARE = 0.15


class Probe:
    """Fixed small subsets of D_r, D_f and D_t that telemetry evaluates at a point: accuracy on
    each, and DA and the smallest principal angles of forget against retain features."""

    def __init__(self, exp: Experiment, retain_rows, size: int, device, seed: int):
        gen = torch.Generator().manual_seed(seed + 1)

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
    def measure(self, model: Classifier, energy: float) -> dict[str, float]:
        was_training = model.training
        model.eval()
        feats_all = model.features(self.x).float()
        hits_all = model.head(feats_all).argmax(1) == self.y
        model.train(was_training)
        out, feats = {}, {}
        for (name, f), hits in zip(zip(self.sizes, feats_all.split(list(self.sizes.values())),
                                       strict=True),
                                   hits_all.split(list(self.sizes.values())), strict=True):
            feats[name] = f
            out[f"acc_{name}"] = hits.float().mean().item()
        try:
            basis_r = top_basis(feats["retain"], energy)
            da = dimensional_alignment(feats["forget"], feats["retain"], basis=basis_r)
            out["da"] = da.value.item()
            angles = angles_between(top_basis(feats["forget"], energy).vectors, basis_r.vectors)
            for i, a in enumerate(angles[:3].tolist()):
                out[f"angle_{i + 1}"] = a
        except ValueError:  # all-zero features (dead units): leave DA out of this point
            pass
        return out


def _optimizer(params: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    # weight decay is added to the gradients by the loop, so gradient masks cover it too
    if params["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=params["lr"])
    return torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)


def unlearn(cfg: Config, spec: MethodSpec, exp: Experiment, original: Classifier,
            device: torch.device, *, progress: ProgressFn | None = None,
            telemetry: TelemetryFn | None = None, cancel: Callable[[], bool] | None = None,
            init: Classifier | None = None, checkpoint: Callable[[dict], None] | None = None,
            resume: dict | None = None) -> UnlearnResult:
    """Run one method from the original model (or from `init`, for forks). The returned model
    is new; `original` is never changed.

    `checkpoint` receives the loop's whole state after every epoch; passing such a state back
    as `resume` continues the run from there, with the same batches it would have drawn.
    """
    params = spec.resolve(cfg.methods.get(spec.name, {}))
    sample = normalise(exp.x_train[: params["batch_size"]].to(device), exp.info)
    warm_up(original, sample)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    cuda = device.type == "cuda"
    model = copy.deepcopy(init if init is not None else original).to(device).train()
    teacher = copy.deepcopy(original).to(device).eval().requires_grad_(False)

    retain_rows = exp.retain_idx
    n_keep = max(1, math.ceil(params["retain_fraction"] * len(retain_rows)))
    retain_rows = retain_rows[torch.randperm(len(retain_rows), generator=gen)[:n_keep].sort()[0]]
    forget_rows = exp.forget_idx
    streams = {
        "forget": Stream(exp.x_train[forget_rows], exp.y_train[forget_rows], params["batch_size"],
                         exp.info, device, gen, cuda),
        "retain": Stream(exp.x_train[retain_rows], exp.y_train[retain_rows], params["batch_size"],
                         exp.info, device, gen, cuda),
    }
    ctx = Context(model, teacher, params, exp.info.num_classes, len(forget_rows), n_keep, device,
                  gen)
    ctx.fresh_model = lambda: build_model(cfg.model_name, exp.info.channels,
                                          exp.info.num_classes, exp.info.size).to(device)

    def batch(source: str) -> Batch:
        b = Batch()
        if source in ("forget", "both"):
            b.xf, b.yf = streams["forget"].next()
        if source in ("retain", "both"):
            b.xr, b.yr = streams["retain"].next()
        return b

    ctx.draw = batch
    if spec.setup is not None:
        spec.setup(ctx)  # before any resume: a mask or teacher comes from the starting model
    plan = [spec.phases(ctx, e) for e in range(params["epochs"])]
    total = sum(p.steps for phases in plan for p in phases)
    every = cfg.unlearn.cadence(total)
    probe = Probe(exp, retain_rows, cfg.unlearn.telemetry_samples, device, cfg.seed) \
        if telemetry is not None and every > 0 else None
    opt = _optimizer(params, model)
    wd = params["weight_decay"]
    records: list[dict] = []
    window: dict[str, list[float]] = {}
    telemetry_seconds, step, first_epoch, earlier = 0.0, 0, 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        for name, stream in streams.items():
            stream.order, stream.pos = resume["streams"][name], resume["positions"][name]
        step, first_epoch = resume["step"], resume["epoch"]
        earlier, telemetry_seconds = resume["seconds"], resume["telemetry_seconds"]
        start -= earlier

    probe_seconds = 0.0  # what the last probe took

    def report(epoch: int, phase_name: str) -> None:
        nonlocal telemetry_seconds, probe_seconds
        t0 = time.perf_counter()
        own = t0 - start - telemetry_seconds
        # the phase as a number too: the run store keeps numbers only (the curves shade phases)
        point = {"step": step, "epoch": epoch + 1, "phase": phase_name,
                 f"phase_{phase_name}": 1.0, "seconds": own}
        point.update({f"loss_{k}": sum(v) / len(v) for k, v in window.items()})
        # the probe costs about one training step on a small model: it runs at the first and
        # last points, and at the others while telemetry stays within PROBE_SHARE of the run
        if step in (0, total) or telemetry_seconds + probe_seconds <= PROBE_SHARE * own:
            t1 = time.perf_counter()
            point.update(probe.measure(model, cfg.eval.energy))
            probe_seconds = time.perf_counter() - t1
        window.clear()
        records.append(point)
        telemetry(point)
        telemetry_seconds += time.perf_counter() - t0

    # A step's loss values are read (checked for NaN, logged) only after the next step has been
    # queued: reading them at once would make the host wait for the device on every step.
    pending: list = []

    def settle() -> None:
        if not pending:
            return
        values_on_device, names, at_step, where = pending.pop()
        values = values_on_device.tolist()
        for name, value in zip(names, values, strict=True):
            if not math.isfinite(value):
                raise UnlearningFailed(
                    f"{spec.name}: loss term '{name}' became {value} at step {at_step} "
                    f"({where}); lower {spec.name}.lr or the weight of that term")
            window.setdefault(name, []).append(value)
        if progress is not None:
            # one schedule of `total` steps (epochs of a method differ in length)
            progress(Progress("unlearn", 1, 1, at_step, total, sum(values)))

    if probe is not None and resume is None:
        report(-1, "start")
    for epoch, phases in enumerate(plan):
        if epoch < first_epoch:
            continue
        for phase in phases:
            for left in range(phase.steps - 1, -1, -1):
                if cancel is not None and cancel():
                    raise Cancelled(f"cancelled at step {step} of {total}")
                ctx.state["progress"] = step / total
                try:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                        terms = spec.loss(ctx, phase, batch(phase.source))
                except Exception:
                    settle()  # a diverged previous step explains the error better, if there is one
                    raise
                values = torch.stack([t.detach().float() for t in terms.values()])
                opt.zero_grad(set_to_none=True)
                sum(terms.values()).backward()
                if wd:
                    held = [p for p in model.parameters() if p.grad is not None]
                    torch._foreach_add_([p.grad for p in held], [p.detach() for p in held],
                                        alpha=wd)
                if spec.grad_hook is not None:
                    spec.grad_hook(ctx)
                opt.step()
                step += 1
                settle()
                pending.append((values, list(terms), step,
                                f"epoch {epoch + 1}, {phase.name} phase"))
                # also at a phase's last step, so the curves shade phases shorter than `every`
                if probe is not None and (step % every == 0 or step == total or left == 0):
                    settle()
                    report(epoch, phase.name)
        settle()
        if checkpoint is not None:
            checkpoint({
                "epoch": epoch + 1, "step": step, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "streams": {n: s.order for n, s in streams.items()},
                "positions": {n: s.pos for n, s in streams.items()},
                "seconds": time.perf_counter() - start,
                "telemetry_seconds": telemetry_seconds})
    model.eval()
    if cuda:
        torch.cuda.synchronize()
    return UnlearnResult(model, time.perf_counter() - start, telemetry_seconds, step, params,
                         records, ctx.state)

