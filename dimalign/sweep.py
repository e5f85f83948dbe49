"""Sweeps over knobs: every combination of `--grid key=v1,v2` values becomes one run in the
store, queued through `jobs.submit` like any run (the owner's key and queue cap apply). The
scheduler runs them: this machine's workers, or with `--backend ray` the Ray-backed scheduler,
whose jobs are Ray tasks on the cluster's nodes (`dimalign.ray_backend`); either way only the
scheduler writes the store, so the dashboard shows every run.

A sweep is a batch: its runs carry its id (`new_sweep_id`), which `dimalign cancel --sweep ID`
and Tune's *Cancel sweep* use to stop all of them at once. Queueing checks the owner's queue
cap for the whole sweep before the first run, and an interrupt (Ctrl-C) while queueing cancels
the runs already queued: a sweep is queued whole or not at all.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable, Iterable

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


def queue_sweep(store: Store, preset: str, method: str, grid: Iterable[str],
                fixed: Iterable[str] = (), owner: str = "sweep", *, replicates: int = 1,
                key: str | None = None, sweep_id: str | None = None,
                announce: Callable[[str], None] | None = None, backend: str | None = None,
                address: str | None = None) -> list[str]:
    """Queue every combination (times `replicates`) as `owner` through the shared queue
    (`jobs.submit`; `key`: the web app's owner key), all under one sweep id (`sweep_id`, new if
    None), and make sure a scheduler serves it (`backend`, `address`: the one to start if
    none runs; a scheduler of another backend serving the home is refused before anything is
    queued). `announce(sweep_id)` is called once the sweep
    is checked, before its first run is queued. Over the owner's queue cap: QueueFull before
    anything is queued; interrupted while queueing: what was queued is cancelled and
    SweepInterrupted says so."""
    from dimalign.daemon import check_worker_settings, ensure_scheduler
    from dimalign.jobs import check_queue_room, submit

    check_worker_settings(backend)  # before anything is queued
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
    ensure_scheduler(backend, address)
    return ids


class SweepInterrupted(Exception):
    """Ctrl-C while a sweep was being queued; the runs it had queued are cancelled."""

    def __init__(self, sweep_id: str, queued: int):
        self.sweep_id = sweep_id
        super().__init__(f"interrupted while queueing sweep {sweep_id}: the {queued} run(s) "
                         "it had queued are cancelled")
