"""Sweeps over knobs: every combination of `--grid key=v1,v2` values becomes one run in the
store. Backends: `local` (our scheduler's worker processes) and `ray` (Ray Tune trials, with
fractional GPUs when there are GPUs); both write into the same store, so the dashboard shows
every trial.

A sweep is a batch: its runs carry its id (`new_sweep_id`), which `dimalign cancel --sweep ID`
and Tune's *Cancel sweep* use to stop all of them at once. Queueing checks the owner's queue
cap for the whole sweep before the first run, and an interrupt (Ctrl-C) while queueing cancels
the runs already queued: a sweep is queued whole or not at all.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable

from dimalign import paths
from dimalign.config import build_config, check_replicates
from dimalign.errors import ConfigError
from dimalign.store import Store


def parse_grid(items: Iterable[str]) -> list[list[str]]:
    """["a=1,2", "b=x"] -> [["a=1", "b=x"], ["a=2", "b=x"]] (every combination). A key given
    in two --grid options is refused: its values belong in one (the later option would
    otherwise override the earlier in every combination)."""
    axes, seen = [], {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not options:
            raise ConfigError("--grid", f"expected key=v1,v2,..., got {item!r}")
        if key in seen:
            raise ConfigError(key, f"is in two --grid options ({seen[key]!r} and {item!r}); "
                              f"give all its values in one: --grid {key}="
                              + ",".join(seen[key].partition("=")[2].split(",") + [values]))
        seen[key] = item
        axes.append([f"{key}={v}" for v in options])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def plan(preset: str, method: str, grid: Iterable[str], fixed: Iterable[str] = (),
         replicates: int = 1):
    """Every combination on every replicate (replicate-major: the first replicate's runs are
    queued first, so a whole first pass of the grid arrives early), validated before anything
    is queued."""
    from dimalign.methods import REGISTRY, get_method

    check_replicates(replicates)
    get_method(method)
    grid = list(grid)
    for item in grid:  # another method's knob would change nothing: every run the same
        owner = item.partition(".")[0].strip()
        if owner in REGISTRY and owner != method and "." in item.partition("=")[0]:
            raise ConfigError(item.partition("=")[0].strip(), f"is a knob of {owner}, but the "
                              f"sweep runs {method}: every run would be the same")
    combos = [list(fixed) + combo for combo in parse_grid(grid)]
    if replicates > 1:
        combos = [[*combo, f"replicate={r}"] for r in range(replicates) for combo in combos]
    return _distinct(combos, [build_config(preset, combo) for combo in combos])


def _distinct(combos: list[list[str]], configs: list) -> tuple[list[list[str]], list]:
    """One run per distinct config: values written two ways (3e-4 and 0.0003) are one."""
    seen, kept = set(), []
    for combo, cfg in zip(combos, configs, strict=True):
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append((combo, cfg))
    return [c for c, _ in kept], [cfg for _, cfg in kept]


def new_sweep_id() -> str:
    """A sweep's id: the same form as a run id (the store checks both alike)."""
    return secrets.token_hex(6)


def sweep_local(store: Store, preset: str, method: str, grid: Iterable[str],
                fixed: Iterable[str] = (), owner: str = "sweep", *, replicates: int = 1,
                key: str | None = None, sweep_id: str | None = None,
                announce: Callable[[str], None] | None = None) -> list[str]:
    """Queue every combination (times `replicates`) as `owner` through the shared queue
    (`jobs.submit`; `key`: the web app's owner key), all under one sweep id (`sweep_id`, new if
    None), and make sure a scheduler serves it. `announce(sweep_id)` is called once the sweep
    is checked, before its first run is queued. Over the owner's queue cap: QueueFull before
    anything is queued; interrupted while queueing: what was queued is cancelled and
    SweepInterrupted says so."""
    from dimalign.daemon import check_worker_settings, ensure_scheduler
    from dimalign.jobs import check_queue_room, submit

    check_worker_settings()  # before anything is queued
    combos, _ = plan(preset, method, grid, fixed, replicates)
    check_queue_room(store, owner, len(combos))
    sweep_id = sweep_id or new_sweep_id()
    if announce:
        announce(sweep_id)
    ids: list[str] = []
    try:
        for combo in combos:
            ids.append(submit(store, preset=preset, overrides=combo, method=method,
                              owner=owner, key=key, sweep=sweep_id))
    except KeyboardInterrupt:
        store.cancel_sweep(sweep_id)  # its own runs only: cancelling needs no key here
        raise SweepInterrupted(sweep_id, len(ids)) from None
    except BaseException:
        store.cancel_sweep(sweep_id)  # half a sweep would answer half the question
        raise
    ensure_scheduler()
    return ids


class SweepInterrupted(Exception):
    """Ctrl-C while a sweep was being queued; the runs it had queued are cancelled."""

    def __init__(self, sweep_id: str, queued: int):
        self.sweep_id = sweep_id
        super().__init__(f"interrupted while queueing sweep {sweep_id}: the {queued} run(s) "
                         "it had queued are cancelled")


def sweep_ray(store: Store, preset: str, method: str, grid: Iterable[str],
              fixed: Iterable[str] = (), owner: str = "sweep", gpus_per_trial: float = 0.25,
              address: str | None = None, *, replicates: int = 1,
              sweep_id: str | None = None,
              announce: Callable[[str], None] | None = None) -> list[str]:
    """Each trial is a Ray Tune trial that runs our worker on one stored run."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise RuntimeError("the ray backend needs Ray: pip install -e '.[ray]'") from None
    import torch

    from dimalign.jobs import check_queue_room
    from dimalign.ray_backend import _check_reachable
    from dimalign.train import experiment_key, get_baselines

    combos, configs = plan(preset, method, grid, fixed, replicates)
    check_queue_room(store, owner, len(configs))
    _check_reachable(address)  # a wrong HOST:PORT in one line, before baselines are trained
    sweep_id = sweep_id or new_sweep_id()
    if announce:
        announce(sweep_id)
    for cfg in {c.replicate: c for c in configs}.values():  # one pair of baselines per replicate
        get_baselines(cfg)  # trials share them: train them once, here
    try:  # whole or not at all, as a local sweep: what is left of it is cancelled
        ids = [store.create_run(owner=owner, kind="unlearn", preset=preset, method=method,
                                config=cfg.to_dict(), executor="ray", sweep=sweep_id,
                                experiment=experiment_key(cfg)) for cfg in configs]
        home = str(paths.home())
        # "local": a new instance of our own, never whatever cluster this machine last started
        # (address None would join that one, whose trials could not reach this store)
        ray.init(address=address or "local", ignore_reinit_error=True, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": {"DIMALIGN_HOME": home}})
        resources = {"cpu": 1, "gpu": gpus_per_trial if torch.cuda.is_available() else 0}
        trainable = tune.with_resources(_trial, resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"run_id": tune.grid_search(ids), "home": home},
            run_config=tune.RunConfig(name=f"sweep-{ids[0]}", verbose=0,
                                      storage_path=os.path.join(home, "ray")),
        )
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the run ids
            tuner.fit()
    except KeyboardInterrupt:
        store.cancel_sweep(sweep_id)
        raise SweepInterrupted(sweep_id, store.count(sweep=sweep_id)) from None
    except BaseException:
        store.cancel_sweep(sweep_id)
        raise
    if address is None:
        ray.shutdown()  # the local instance we started
    return ids


def _trial(config: dict) -> dict:
    """A Ray Tune trial: our worker on one stored run; reports the unlearned model's metrics."""
    from ray import tune

    from dimalign.worker import work

    work(config["home"], config["run_id"])
    run = Store().get(config["run_id"])
    metrics = ((run.result or {}).get("models") or {}).get("unlearned", {})
    report = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    report["status_done"] = float(run.status == "done")
    tune.report(report)
    return report
