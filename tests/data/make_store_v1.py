"""Writes tests/data/store-v1.sqlite: a small run store in schema 1, as dimalign wrote it up to
commit 1d08b3e (before runs had an experiment column). tests/test_store.py opens a copy with
the current code to test the migration. Made with:

    git show 1d08b3e:dimalign/store.py > /tmp/store_v1.py
    PYTHONPATH=. .venv/bin/python tests/data/make_store_v1.py /tmp/store_v1.py

Runs (owner, kind, status): shared baselines done; alice's MUDA run done (metrics, an
artifact) and its UMAP; bob's queued run; alice's run whose config no longer validates
(scenario.classes=99); alice's failed run of another experiment (digits-random).
"""

import importlib.util
import sys
from pathlib import Path

from dimalign.config import build_config
from dimalign.jobs import baselines_key

OUT = Path(__file__).with_name("store-v1.sqlite")
TINY = ["train.epochs=2"]


def main(old_store: str) -> None:
    spec = importlib.util.spec_from_file_location("store_v1", old_store)
    v1 = sys.modules["store_v1"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v1)
    assert v1.SCHEMA_VERSION == 1
    OUT.unlink(missing_ok=True)
    store = v1.Store(OUT)
    cfg = build_config("digits-class", TINY)
    key = baselines_key(cfg)
    result = {"models": {m: {"acc_forget": f, "da": 0.9} for m, f in
                         (("original", 1.0), ("retrained", 0.0), ("unlearned", 0.05))}}
    base = store.create_run(owner="shared", kind="baselines", preset="digits-class",
                            method="retrain", config=cfg.to_dict(), share_key=key)
    store.update(base, status="done", result={"models": {m: result["models"][m] for m in
                                                         ("original", "retrained")}})
    done = store.create_run(owner="alice", kind="unlearn", preset="digits-class",
                            method="muda", config=cfg.to_dict())
    for step in range(3):
        store.log_metrics(done, step, {"acc_forget": 1.0 - step / 3, "da": 0.8 + step / 20})
    store.add_artifact(done, "result", Path("/nonexistent") / done / "result.json")
    store.update(done, status="done", result=result)
    embed = store.create_run(owner="alice", kind="embed", preset="digits-class", method="umap",
                             config={"source": done, "samples": 150}, parent_id=done,
                             share_key=f"embed:{done}:150")
    store.update(embed, status="done")
    store.create_run(owner="bob", kind="unlearn", preset="digits-class", method="muda",
                     config=build_config("digits-class", TINY + ["muda.lambda_da=1"]).to_dict())
    stale = cfg.to_dict()
    stale["scenario"]["classes"] = [99]  # digits has 10 classes: refused by validation
    store.create_run(owner="alice", kind="unlearn", preset="digits-class", method="muda",
                     config=stale, status="failed")
    other = store.create_run(owner="alice", kind="unlearn", preset="digits-random",
                             method="muda",
                             config=build_config("digits-random", TINY).to_dict())
    store.update(other, status="failed", error="made up")
    store.close()  # the last connection folds the WAL into the file


if __name__ == "__main__":
    main(sys.argv[1])
