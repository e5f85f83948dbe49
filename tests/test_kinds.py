"""Job kinds as a registry (dimalign/kinds/): every kind declares what the engine needs to run
it, and adding a kind is one new file, as adding a method is."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dimalign
from dimalign.errors import ConfigError
from dimalign.kinds import REGISTRY, get_kind
from dimalign.run_files import CHECKPOINT, FILM_PENDING, GEOMETRY, RESULT, WEIGHTS


def test_the_built_in_kinds_declare_what_the_backends_read():
    # file name order
    assert list(REGISTRY) == ["audit", "baselines", "embed", "film_umap", "film", "unlearn"]
    unlearn, embed, audit = get_kind("unlearn"), get_kind("embed"), get_kind("audit")
    assert unlearn.resumes and unlearn.experiment and unlearn.parent_files == (WEIGHTS, CHECKPOINT)
    assert get_kind("baselines").trains_models and not unlearn.trains_models
    assert embed.parent_files == (GEOMETRY,) and not embed.experiment
    assert audit.parent_files == (RESULT, WEIGHTS) and audit.source_baselines
    assert embed.share_key("abc", embed.settings({"samples": 300.0}, None)) == "embed:abc:300"
    with pytest.raises(ValueError, match="30..20000"):
        embed.settings({"samples": 5}, None)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        audit.settings({"settings": {"relearn": 3}}, None)
    assert unlearn.then == ("film",) and get_kind("film").parent_files == (FILM_PENDING,)
    with pytest.raises(ConfigError, match="unknown job kind 'sketch'"):
        get_kind("sketch")


KIND = '''"""Census: counts the images of a finished run's forget set (a test's kind)."""
from dimalign.kinds.base import JobKind, register
from dimalign.runner import load_result


def run(job, hooks):
    hooks.progress(0.5, "counting")
    forget = load_result(job.parent.folder)["data"]["forget"]
    path = job.parent.folder / f"census-{job.config['scale']}.json"
    path.write_text(str(forget * job.config["scale"]))
    hooks.artifact(job.parent.id, path.stem, path)
    return {"models": {}, "seconds": {}, "device": "cpu"}


def settings(raw, source):
    return {"scale": int(raw.get("scale", 1))}


register(JobKind("census", "Census", run, settings=settings, method="census",
                 share_key=lambda source, s: f"census:{source}:{s['scale']}",
                 output=lambda folder, s: folder / f"census-{s['scale']}.json"))
'''

SCRIPT = '''
import json, sys, time
from dimalign.jobs import submit, submit_job
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import Store

store = Store()
scheduler = Scheduler(store, slots=[Slot(None)])
def drain(run_id):
    end = time.monotonic() + 240
    while store.get(run_id).status in ("queued", "running") and time.monotonic() < end:
        scheduler.tick()
        time.sleep(0.1)
    return store.get(run_id)
source = submit(store, preset="digits-class", overrides=["train.epochs=2", "muda.epochs=1"])
assert drain(source).status == "done", store.get(source).error
census = submit_job(store, "census", source, "local", {"scale": 3})
again = submit_job(store, "census", source, "local", {"scale": 3})
run = drain(census)
scheduler.close()
print(json.dumps({"same": census == again, "status": run.status, "error": run.error,
                  "method": run.method, "artifacts": sorted(store.artifacts(source)),
                  "reused": submit_job(store, "census", source, "local", {"scale": 3}) == census,
                  "file": (run.folder.parent / source / "census-3.json").read_text()}))
'''


def test_a_new_job_kind_is_one_new_file(tmp_path, tiny_baselines):
    """A copy of the package plus one module in kinds/: a job of that kind is queued, shared,
    run by a worker of the real scheduler and indexed, with no other file touched."""
    copy_root = tmp_path / "src"
    shutil.copytree(Path(dimalign.__file__).parent, copy_root / "dimalign",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy_root / "dimalign" / "kinds" / "zz_census.py").write_text(KIND)
    home = tmp_path / "home"
    shutil.copytree(os.environ["DIMALIGN_HOME"] + "/models", home / "models")  # its baselines
    env = {**os.environ, "PYTHONPATH": str(copy_root), "DIMALIGN_HOME": str(home)}
    ran = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["status"] == "done", out["error"]
    assert out["same"] and out["reused"] and out["method"] == "census"
    assert "census-3" in out["artifacts"] and int(out["file"]) > 0


def test_export_and_runs_read_the_registry(tmp_path, monkeypatch, cli):
    from dimalign.store import Store

    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    store = Store()
    parent = store.create_run(owner="ann", kind="unlearn", preset="digits-class", method="muda",
                              config={}, status="done")
    job = store.create_run(owner="ann", kind="embed", preset="digits-class", method="umap",
                           config={"source": parent, "samples": 300}, parent_id=parent)
    store.close()
    ran = cli("export", job, str(tmp_path / "out"))  # its file lies beside its source run
    assert ran.returncode == 2 and "is a manifold embedding job of run" in ran.stderr
    assert f"export that run (dimalign export {parent} DIR)" in ran.stderr
    listed = cli("runs", "--kind", "embed", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [job]
    unknown = cli("runs", "--kind", "sketch")
    assert unknown.returncode == 2 and "invalid choice: 'sketch'" in unknown.stderr
