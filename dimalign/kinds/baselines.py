"""Baselines: train (or load) and evaluate an experiment's original and retrained models, once
for everyone who asks (its share key is the experiment's); pages read its metrics."""

from dimalign.kinds.base import Hooks, Job, JobKind, Throttle, index_files, make_folder, register
from dimalign.run_files import FINISHED


def run(job: Job, hooks: Hooks) -> dict:
    from dimalign.config import config_from_dict
    from dimalign.runner import run_experiment
    from dimalign.train import pick_device

    cfg = config_from_dict(job.config)
    hooks.device(str(pick_device(cfg.device)))
    make_folder(job.folder)
    result = run_experiment(cfg, "retrain", preset=job.preset, progress=Throttle(hooks.progress),
                            run_dir=job.folder, say=hooks.say)
    index_files(job, hooks, FINISHED)
    return result


def share_key(source: str | None, settings: dict) -> str:
    from dimalign.config import config_from_dict
    from dimalign.train import experiment_key

    return experiment_key(config_from_dict(settings))


register(JobKind("baselines", "Baselines", run, experiment=True, share_key=share_key,
                 trains_models=True, writes=FINISHED))
