"""Run-store and scheduling costs: metric writes, curve reads, submit to first telemetry step.

Medians of:
- writing one step's metrics (10 keys, one transaction) — against a bare sqlite3 insert of the
  same rows in the same process;
- reading a 1,000-point curve for a page;
- submit -> a worker's first telemetry step through the real background scheduler, split into
  "worker up" (polled, spawned, run claimed in the store) and the rest (torch import, model
  loading, first step) — against the same run started in-process.

    .venv/bin/python -m bench store [--runs 5]
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.common import header, median, parser


def main(argv: list[str] | None = None) -> int:
    args = parser(__name__, runs=5).parse_args(argv)
    home = tempfile.mkdtemp(prefix="dimalign-bench-")
    os.environ["DIMALIGN_HOME"] = home
    from dimalign.config import build_config
    from dimalign.daemon import ensure_scheduler, stop_scheduler
    from dimalign.jobs import submit
    from dimalign.store import Store
    from dimalign.train import get_baselines

    header("run store and scheduling", {"home": home, "runs": args.runs})
    store = Store()
    run_id = store.create_run(owner="bench", kind="unlearn", preset="digits-class",
                              method="muda", config={})
    values = {f"key_{i}": float(i) for i in range(10)}
    writes = []
    for step in range(1000):
        t = time.perf_counter()
        store.log_metrics(run_id, step, values)
        writes.append(time.perf_counter() - t)
    bare = sqlite3.connect(Path(home) / "bare.sqlite", isolation_level=None)
    bare.execute("CREATE TABLE m (run TEXT, step INT, key TEXT, value REAL, wall REAL)")
    bare_writes = []
    for step in range(1000):
        t = time.perf_counter()
        with bare:
            bare.executemany("INSERT INTO m VALUES (?,?,?,?,?)",
                             [(run_id, step, k, v, 0.0) for k, v in values.items()])
        bare_writes.append(time.perf_counter() - t)
    print(f"write one step (10 metrics): median {median(writes) * 1e3:.3f} ms "
          f"(target < 1 ms); bare sqlite3 default journal: {median(bare_writes) * 1e3:.3f} ms; "
          f"ratio {median(writes) / median(bare_writes):.2f}")
    reads = []
    for _ in range(50):
        t = time.perf_counter()
        curve = store.curve(run_id, "key_3")
        reads.append(time.perf_counter() - t)
    assert len(curve) == 1000
    print(f"read a 1,000-point curve: median {median(reads) * 1e3:.2f} ms (target < 50 ms)")

    overrides = ["train.epochs=2"]
    cfg = build_config("digits-class", overrides)
    get_baselines(cfg)  # cached: the scheduling figure is "beyond model training"
    ensure_scheduler()  # the real background scheduler, as `dimalign submit` uses it
    up, first = [], []
    for _ in range(args.runs):
        t0 = time.time()
        rid = submit(store, preset="digits-class", overrides=overrides, owner="bench")
        while not store.curve(rid, "acc_forget"):
            time.sleep(0.02)
        first_wall = min(wall for *_, wall in store.metric_rows(rid))
        up.append(store.get(rid).started - t0)
        first.append(first_wall - t0)
        while not store.get(rid).terminal:
            time.sleep(0.05)
    from dimalign.methods import REGISTRY
    from dimalign.methods.loop import unlearn

    inproc = []
    b = get_baselines(cfg)
    for _ in range(args.runs):
        t0 = time.time()
        stamps = []
        unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                telemetry=lambda p, s=stamps: s.append(time.time()))
        inproc.append(stamps[0] - t0)
    print(f"submit -> worker up (spawned, store open): median {median(up):.2f} s")
    print(f"submit -> first telemetry step in the store: median {median(first):.2f} s "
          f"(of which model loading and torch import happen after 'worker up')")
    print(f"same run in-process, start -> first telemetry step: median {median(inproc):.3f} s")
    print(f"scheduling overhead beyond loading (worker up): {median(up):.2f} s (target < 5 s)")
    stop_scheduler()
    return 0
