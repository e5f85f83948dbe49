"""Unlearning: a method on an experiment's baselines, from the original model or a fork's
parent; it checkpoints every epoch and a resumed run continues from its last checkpoint."""

import time
from collections.abc import Callable

from dimalign import checked
from dimalign.kinds.base import (
    Hooks,
    Job,
    JobKind,
    RunRef,
    Throttle,
    index_files,
    make_folder,
    register,
)
from dimalign.run_files import CHECKPOINT, FILM, FILM_PENDING, FINISHED, WEIGHTS


def run(job: Job, hooks: Hooks) -> dict:
    from dimalign.config import config_from_dict
    from dimalign.methods.film import BUDGET
    from dimalign.runner import run_experiment
    from dimalign.train import model_from_state, pick_device

    cfg = config_from_dict(job.config)
    device = pick_device(cfg.device)
    hooks.device(str(device))
    make_folder(job.folder)
    ckpt_path = job.folder / CHECKPOINT
    resume = _resume_state(ckpt_path, hooks.say)
    # the points sent up to the checkpoint; the resumed run sends the later ones again
    earlier = [] if resume is None else [p for p in job.points if p["step"] <= resume["step"]]

    def telemetry(point: dict) -> None:
        if point["step"] > job.already:  # metrics written before a crash are kept, not redone
            hooks.telemetry(point["step"], {k: v for k, v in point.items()
                                            if isinstance(v, int | float) and k != "step"})

    def checkpoint(state: dict) -> None:
        checked.save_torch(state, ckpt_path)
        hooks.artifact(job.id, "checkpoint", ckpt_path)

    live = LiveFilm(job, hooks)
    init = None
    if job.parent is not None:
        init = model_from_state(cfg, _parent_state(job.parent), device)
    result = run_experiment(cfg, job.method, preset=job.preset,
                            progress=Throttle(hooks.progress), telemetry=telemetry,
                            cancel=hooks.cancelled, run_dir=job.folder, init=init,
                            checkpoint=checkpoint, resume=resume, earlier_points=earlier,
                            say=hooks.say, on_frame=live, film_budget=BUDGET)
    index_files(job, hooks, (*FINISHED, FILM, FILM_PENDING))
    return result


class LiveFilm:
    """Writes the film so far into the run's folder as it grows, at most once a second (the
    Unlearn page draws it while the run trains); the finished run's complete film replaces it."""

    EVERY = 1.0  # s

    def __init__(self, job: Job, hooks: Hooks):
        self.path, self.job, self.hooks, self.last = job.folder / FILM, job, hooks, 0.0

    def __call__(self, film: Callable[[], dict]) -> None:
        now = time.monotonic()
        if now - self.last < self.EVERY and self.last:
            return  # the first frame goes at once: the page shows the film has begun
        self.last = now
        checked.save_torch(film(), self.path)
        self.hooks.artifact(self.job.id, "film", self.path)


def _resume_state(path, say) -> dict | None:
    """The run's last checkpoint, if it has one. A damaged one is set aside and the run
    starts again from step 0 (the metrics it wrote before are kept), and says so."""
    try:
        return checked.load_torch(path)
    except FileNotFoundError:
        return None
    except checked.DamagedFile as err:
        say(f"its checkpoint was damaged ({err.reason}; {err.where}); starting again from "
            "step 0")
        return None


def _parent_state(parent: RunRef) -> dict:
    """A fork starts from the parent's final weights, or its last checkpoint if unfinished.
    Either is checked: a damaged one fails the fork with one line (and is set aside)."""
    for name, pick in ((WEIGHTS, lambda state: state),
                       (CHECKPOINT, lambda state: state["model"])):
        path = parent.folder / name
        try:
            return pick(checked.load_torch(path))
        except FileNotFoundError:
            continue
        except checked.DamagedFile as err:
            raise RuntimeError(f"cannot fork run {parent.id}: {err}") from None
    if parent.status == "done":
        raise RuntimeError(f"cannot fork run {parent.id}: its weights are gone ({WEIGHTS} is "
                           f"missing from {parent.folder}); fork another run")
    raise RuntimeError(f"run {parent.id} has no checkpoint to fork from yet; wait for its "
                       "first epoch to finish")


register(JobKind("unlearn", "Unlearning", run, experiment=True,
                 parent_files=(WEIGHTS, CHECKPOINT), resumes=True,
                 writes=(*FINISHED, FILM, FILM_PENDING, CHECKPOINT), then=("film",)))
