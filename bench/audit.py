"""The audit job's wall time against the run's own unlearning time (digits-class, MUDA).

Wall time of a run's audit (layer-wise geometry, membership evidence, the relearn attack,
the class view: what the worker's audit job computes) against the run's own unlearning time,
medians of several repeats measured alternately in one process, with the torch threads of the
worker that runs the job (half the cores).

    .venv/bin/python -m bench audit [--preset digits-class] [--method muda] [--runs 5]

Baselines are trained once in a throw-away DIMALIGN_HOME (not timed) unless --home is given.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import header, median, parser, timed


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class", home=True)
    options.add_argument("--method", default="muda")
    options.add_argument("--relearn-steps", type=int, default=50)
    args = options.parse_args(argv)
    os.environ["DIMALIGN_HOME"] = args.home or tempfile.mkdtemp(prefix="dimalign-bench-")
    import torch

    from dimalign.scheduler import worker_threads

    torch.set_num_threads(worker_threads(1))  # as the worker that runs the audit job has

    from dimalign.audit import AuditSettings, audit_saved_run
    from dimalign.config import build_config
    from dimalign.methods import get_method
    from dimalign.methods.loop import unlearn
    from dimalign.runner import run_experiment
    from dimalign.train import get_baselines

    cfg = build_config(args.preset)
    settings = AuditSettings(relearn_steps=args.relearn_steps)
    result = run_experiment(cfg, args.method, preset=args.preset, say=lambda text: None)
    folder = Path(result["artifacts"])
    b = get_baselines(cfg)
    spec = get_method(args.method)
    header("audit job vs the run's own unlearning", {
        "preset": args.preset, "method": args.method, "device": b.device, "runs": args.runs,
        "relearn steps": settings.relearn_steps,
        "relearn samples": settings.samples(result["data"]["forget"]),
        "train/test": f"{result['data']['train']}/{result['data']['test']}"})
    audit_saved_run(folder, settings)  # once untimed: first-use imports (scikit-learn's AUC)
    unlearning, audits, parts = [], [], []
    for _ in range(args.runs):  # alternated, so drift hits both alike
        unlearning.append(unlearn(cfg, spec, b.experiment, b.original, b.device).seconds)
        marks: list[tuple[str, float]] = []
        audits.append(timed(lambda m=marks: audit_saved_run(folder, settings, note(m))))
        parts.append(phase_seconds(marks))
    u, a = median(unlearning), median(audits)
    print(f"the run's own unlearning ({spec.title}, loop clock): median {u:.3f} s  "
          f"runs {', '.join(f'{v:.3f}' for v in unlearning)}")
    print(f"audit job (audit_saved_run, wall): median {a:.3f} s  "
          f"runs {', '.join(f'{v:.3f}' for v in audits)}")
    print(f"audit / unlearning: {a / u:.1f}x   (retraining, as cached: "
          f"{b.seconds['retrained']:.2f} s; audit / retraining {a / b.seconds['retrained']:.2f}x)")
    print("audit parts, median s: " + ", ".join(
        f"{part} {median([p[part] for p in parts]):.3f}" for part in parts[0]))
    return 0


def note(marks: list):
    """A progress callback that records when each phase of the audit began."""
    return lambda fraction, phase: marks.append((phase.split(":")[0], time.perf_counter()))


def phase_seconds(marks: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds from each phase's first mark to the next phase's (the last to now: it ends
    with the audit, which `timed` has just measured)."""
    end = time.perf_counter()
    firsts: dict[str, float] = {}
    for phase, at in marks:
        firsts.setdefault(phase, at)
    names = list(firsts)
    return {name: (firsts[names[i + 1]] if i + 1 < len(names) else end) - firsts[name]
            for i, name in enumerate(names)}
