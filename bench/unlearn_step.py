"""Where an unlearning step's time goes: the N×N against the C×C basis route, then a profile.

One method's wall time with the retain basis taken through the N×N route
(`geometry._top_basis_from_rows`, the default) against the full C×C eigendecomposition (the
route before it), in one process, then a torch.profiler table of one more run's first
--profile-steps steps. Weights are untrained (speed does not depend on them).

    .venv/bin/python -m bench unlearn_step [--preset cifar10-class] [--method muda] [--runs 3]
                                           [--epochs 2] [--rows 15] [--profile-steps 40]

Without CIFAR-10 on the machine, CIFAR-shaped synthetic data stands in (the header says so).
"""

from __future__ import annotations

import contextlib

import torch

from bench.common import cifar10_arrays, header, median, parser, use_arrays
from dimalign import geometry
from dimalign.config import build_config
from dimalign.data import build_experiment
from dimalign.methods import REGISTRY
from dimalign.methods.loop import Cancelled, unlearn
from dimalign.models import build_model
from dimalign.train import pick_device


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=3, preset="cifar10-class")
    options.add_argument("--method", default="muda")
    options.add_argument("--epochs", type=int, default=2)
    options.add_argument("--rows", type=int, default=15)
    options.add_argument("--profile-steps", type=int, default=40,
                         help="steps of the profiled run (the profiler slows every op down)")
    args = options.parse_args(argv)
    cfg = build_config(args.preset, [f"{args.method}.epochs={args.epochs}"])
    data = cfg.dataset
    if cfg.dataset == "cifar10":
        arrays, data = cifar10_arrays()
        use_arrays("cifar10", arrays)
    device = pick_device(cfg.device)
    exp = build_experiment(cfg)
    info = exp.info
    torch.manual_seed(0)
    original = build_model(cfg.model_name, info.channels, info.num_classes, info.size).to(device)
    spec = REGISTRY[args.method]
    header("one unlearning step", {"preset": args.preset, "method": args.method,
                                   "epochs": args.epochs, "runs": args.runs, "data": data,
                                   "device": device})
    row_route = geometry._top_basis_from_rows
    times: dict[str, list[float]] = {"N×N route (default)": [], "C×C route (before)": []}
    steps = 0
    for _ in range(args.runs):  # interleaved, so drift hits both alike
        for name in times:
            geometry._top_basis_from_rows = row_route if "default" in name else (
                lambda *a: None)
            out = unlearn(cfg, spec, exp, original, device)
            times[name].append(out.seconds)
            steps = out.steps
    geometry._top_basis_from_rows = row_route
    base = median(times["C×C route (before)"])
    for name, values in times.items():
        print(f"{name:<24} median {median(values):.3f} s  {1000 * median(values) / steps:.2f} "
              f"ms/step  / before {median(values) / base:.2f}  runs "
              f"{[round(v, 3) for v in values]}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    seen = iter(range(args.profile_steps))
    with torch.profiler.profile(activities=activities) as prof, contextlib.suppress(Cancelled):
        unlearn(cfg, spec, exp, original, device, cancel=lambda: next(seen, None) is None)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))
    return 0
