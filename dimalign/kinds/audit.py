"""Audit: a finished run's layer-wise geometry, membership evidence, relearn attack, class
view and per-sample scores (`dimalign.audit`), written beside it; one job per run and
settings."""

import dataclasses
from pathlib import Path

from dimalign.errors import ConfigError
from dimalign.kinds.base import Hooks, Job, JobKind, Throttle, register
from dimalign.run_files import RESULT, WEIGHTS
from dimalign.store import StoreError


def run(job: Job, hooks: Hooks) -> dict:
    from dimalign.audit import AuditSettings, audit_saved_run

    settings = AuditSettings(**job.config["settings"])
    progress = Throttle(hooks.progress)
    path, bundle = audit_saved_run(job.parent.folder, settings, progress.at)
    hooks.artifact(job.parent.id, path.stem, path)
    return {"models": {}, "seconds": {"audit": bundle["seconds"]}, "device": bundle["device"]}


def settings(raw: dict, source: Path | None) -> dict:
    """{"settings": AuditSettings as a dict} the source run's forget set can take (ConfigError
    otherwise; unknown settings are a ConfigError too)."""
    from dimalign.audit import AuditSettings

    try:
        checked = AuditSettings(**raw.get("settings", {}))
    except TypeError as err:
        raise ConfigError("audit", str(err)) from None
    if source is not None:
        checked.check(_forget_size(source))
    return {"settings": dataclasses.asdict(checked)}


def _forget_size(folder: Path) -> int:
    """The forget set's size, from the run's saved result (checked: a damaged one is one
    line, and is set aside)."""
    from dimalign.checked import DamagedFile
    from dimalign.runner import load_result

    try:
        return int(load_result(folder)["data"]["forget"])
    except (FileNotFoundError, DamagedFile) as err:
        raise StoreError(f"run {folder.name} has no readable result to audit ({err})") from None


def share_key(source: str | None, config: dict) -> str:
    settings = config["settings"]
    return f"audit:{source}:{settings['relearn_samples']}:{settings['relearn_steps']}"


def output(folder: Path, config: dict) -> Path:
    from dimalign.audit import AuditSettings, audit_path

    return audit_path(folder, AuditSettings(**config["settings"]))


register(JobKind("audit", "Audit", run, settings=settings, share_key=share_key, output=output,
                 parent_files=(RESULT, WEIGHTS), source_baselines=True, method="audit",
                 writes=("audit-v<version>-m<samples>-s<steps>.json",)))
