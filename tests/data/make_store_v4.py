"""Writes tests/data/store-v4.sqlite: a small run store in schema 4, as dimalign wrote it up to
commit c7a5d2a (before the workshop's challenges and their entries). tests/test_store.py opens
a copy with the current code to test the migration. Made with:

    git show c7a5d2a:dimalign/store.py > /tmp/store_v4.py
    PYTHONPATH=. .venv/bin/python tests/data/make_store_v4.py /tmp/store_v4.py

Runs (owner, kind, status): shared baselines done; alice's MUDA run done (metrics, a result);
bob's run of a sweep, queued. Owners alice and bob are claimed with the keys KEYS names.
"""

import importlib.util
import sys
from pathlib import Path

from dimalign.config import build_config
from dimalign.train import experiment_key

OUT = Path(__file__).with_name("store-v4.sqlite")
TINY = ["train.epochs=2"]
KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdefgh"}
SWEEP = "5eeb5eeb5eeb"


def main(old_store: str) -> None:
    spec = importlib.util.spec_from_file_location("store_v4", old_store)
    v4 = sys.modules["store_v4"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v4)
    assert v4.SCHEMA_VERSION == 4
    OUT.unlink(missing_ok=True)
    store = v4.Store(OUT)
    cfg = build_config("digits-class", TINY)
    key = experiment_key(cfg)
    for owner, owner_key in KEYS.items():
        assert store.claim_owner(owner, owner_key)
    models = {m: {"acc_forget": f, "acc_retain": 0.99, "avg_gap": g} for m, f, g in
              (("original", 1.0, 0.3), ("retrained", 0.0, 0.0), ("unlearned", 0.05, 0.02))}
    base = store.create_run(owner="shared", kind="baselines", preset="digits-class",
                            method="retrain", config=cfg.to_dict(), share_key=key,
                            experiment=key)
    store.update(base, status="done", result={"models": {m: models[m] for m in
                                                         ("original", "retrained")}})
    done = store.create_run(owner="alice", kind="unlearn", preset="digits-class",
                            method="muda", config=cfg.to_dict(), experiment=key)
    for step in range(3):
        store.log_metrics(done, step, {"acc_forget": 1.0 - step / 3})
    store.update(done, status="done", started=1.0, finished=2.0, result={"models": models})
    lam = build_config("digits-class", TINY + ["muda.lambda_da=1"])
    store.create_run(owner="bob", kind="unlearn", preset="digits-class", method="muda",
                     config=lam.to_dict(), experiment=experiment_key(lam), sweep=SWEEP)
    store.close()  # the last connection folds the WAL into the file


if __name__ == "__main__":
    main(sys.argv[1])
