"""Hostile conditions (issue #15): each ends in one clear line with the right exit code, or in a
correct result, and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from dimalign import paths
from dimalign.daemon import ensure_scheduler, scheduler_running, stop_scheduler
from dimalign.jobs import cancel, submit
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import ACTIVE, Store, pid_alive


def said(text: str) -> list[str]:
    """The non-empty lines of a stream."""
    return [line for line in text.splitlines() if line.strip()]


def one_error_line(ran, code: int, *words: str) -> str:
    """The command exited `code`, its stderr is one `dimalign: ...` line holding `words` (no
    traceback), and its stdout is empty. Returns that line."""
    assert ran.returncode == code, (ran.returncode, ran.stderr)
    assert "Traceback" not in ran.stderr and ran.stdout == "", (ran.stdout, ran.stderr)
    (line,) = said(ran.stderr)
    assert line.startswith("dimalign: "), line
    for word in words:
        assert word in line, (word, line)
    return line


def until(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---- scheduler death


def no_background_scheduler() -> None:
    """Stop a background scheduler (a browser or CLI test's would take our jobs) and wait until
    its process is gone, not only its lock."""
    lock = paths.home() / "scheduler.lock"
    holder = int(lock.read_text().strip() or 0) if scheduler_running() else 0
    stop_scheduler()
    until(lambda: not scheduler_running() and not pid_alive(holder), 60,
          "the background scheduler to stop")


@pytest.fixture()
def bare_store(tiny_baselines):
    """The session home (tiny baselines cached), no background scheduler before or after."""
    no_background_scheduler()
    store = Store()
    yield store
    for sweep in {r.sweep for r in store.runs(statuses=ACTIVE, limit=None) if r.sweep}:
        store.cancel_sweep(sweep)  # leave nothing behind for later tests: a sweep at once,
    for run in store.runs(statuses=ACTIVE, limit=None):  # then one by one
        cancel(store, run.id)
    no_background_scheduler()
    store.close()


def background_scheduler() -> subprocess.Popen:
    """A real background scheduler, started as `dimalign submit` starts one."""
    process = ensure_scheduler()
    assert process is not None
    until(scheduler_running, 60, "the scheduler to take its lock")
    return process


def kill_9(process: subprocess.Popen) -> None:
    process.kill()  # SIGKILL: no cleanup, its lock freed by the kernel
    process.wait()


def test_after_the_scheduler_and_its_worker_are_killed_watch_and_resume_finish_the_runs(
        bare_store, tiny, cli, cli_process, monkeypatch):
    store = bare_store
    monkeypatch.setenv("DIMALIGN_WORKERS", "1")
    long = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=60"],
                  owner="killed")
    waiting = submit(store, preset="digits-class", overrides=tiny, owner="behind")
    scheduler = background_scheduler()
    folder = store.get(long).folder
    until(lambda: (folder / "checkpoint.pt").exists() and (store.get(long).progress or 0) >= 0.2,
          180, "the long run's first checkpoint")
    worker = store.get(long).pid
    kill_9(scheduler)
    os.kill(worker, signal.SIGKILL)
    until(lambda: not pid_alive(worker), 30, "the worker to die")
    # what nobody changes while no scheduler runs
    assert (store.get(long).status, store.get(waiting).status) == ("running", "queued")

    watched = cli_process("watch", waiting)  # starts a scheduler: the queue moves again
    assert watched.returncode == 0 and "Traceback" not in watched.stderr, watched.stderr
    assert said(watched.stdout) == [f"{waiting} done"]
    run = store.get(long)
    assert run.status == "interrupted" and "resume" in run.error  # the new one recovered it
    kept = store.curves(long)["acc_forget"]

    resumed = cli("resume", long)
    assert resumed.returncode == 0 and said(resumed.stdout) == [f"{long} queued"], resumed.stderr
    watched = cli("watch", long)
    assert watched.returncode == 0 and said(watched.stdout) == [f"{long} done"], watched.stderr
    after = store.curves(long)["acc_forget"]
    assert after[: len(kept)] == kept and after[-1][0] > kept[-1][0]  # continued, none lost


def test_cancel_and_resume_act_on_a_run_whose_worker_died_with_its_scheduler(bare_store, tiny,
                                                                              cli):
    store = bare_store
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone, back = (submit(store, preset="digits-class", overrides=tiny, owner="orphaned")
                  for _ in range(2))
    for run_id in (gone, back):  # as a scheduler killed with its worker leaves them
        store.update(run_id, status="running", pid=dead.pid, heartbeat=time.time())

    cancelled = cli("cancel", gone)
    assert cancelled.returncode == 0 and "Traceback" not in cancelled.stderr
    assert said(cancelled.stdout) == [f"{gone} cancelled"]
    assert "worker had stopped" in store.get(gone).error

    resumed = cli("resume", back)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr
    assert said(resumed.stdout) == [f"{back} queued"]
    until(lambda: store.get(back).terminal, 180, "the resumed run")  # a scheduler was started
    assert store.get(back).status == "done" and store.get(gone).status == "cancelled"


def test_a_worker_orphaned_by_a_killed_scheduler_keeps_its_slot_and_takes_no_second_job(
        bare_store, tiny, drain, monkeypatch):
    store = bare_store
    monkeypatch.setenv("DIMALIGN_WORKERS", "1")
    long = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=1000"],
                  owner="orphan")
    scheduler = background_scheduler()
    until(lambda: store.get(long).status == "running" and store.curves(long), 180,
          "the long run to start")
    orphan = store.get(long).pid
    kill_9(scheduler)  # its worker lives on, in the middle of its job
    newcomer = submit(store, preset="digits-class", overrides=tiny, owner="newcomer")

    replacement = Scheduler(store, slots=[Slot(None)])  # one slot, as the killed one had
    try:
        until(lambda: replacement.tick() or replacement.slots[0].ready, 120,
              "the replacement's worker")
        for _ in range(10):  # its worker is ready and idle, yet the orphan holds the slot
            replacement.tick()
            time.sleep(0.1)
        assert replacement.held_slots() == {0}
        assert (store.get(long).status, store.get(newcomer).status) == ("running", "queued")
        cancel(store, long)  # the orphan still obeys its run's cancel request
        drain(replacement, lambda: store.get(newcomer).terminal)
        first, second = store.get(long), store.get(newcomer)
        assert first.status == "cancelled" and "cancelled at step" in first.error
        assert second.status == "done" and second.pid != orphan
        assert second.started >= first.finished  # never two jobs in the one slot
        until(lambda: not pid_alive(orphan), 30, "the orphan to leave")  # it took no other job
    finally:
        replacement.close()


def test_an_orphan_holds_the_slot_of_its_own_gpu(bare_store, tiny):
    store = bare_store
    run_id = submit(store, preset="digits-class", overrides=tiny, owner="gpu-orphan")
    # running in a live, beating worker that is no slot's of the new scheduler
    store.update(run_id, status="running", pid=os.getpid(), heartbeat=time.time(),
                 device="cuda:1")
    try:
        gpus = Scheduler(store, slots=[Slot(0), Slot(1)])
        gpus.recover()
        assert store.get(run_id).status == "running"  # alive: not interrupted
        assert gpus.held_slots() == {1}
        assert Scheduler(store, slots=[Slot(None), Slot(None)]).held_slots() == {0}
    finally:
        store.update(run_id, status="cancelled", pid=None)


def test_a_workers_setting_below_one_or_not_a_number_is_refused_in_one_line(bare_store, cli,
                                                                           cli_process,
                                                                           monkeypatch):
    store = bare_store
    ran = cli_process("submit", "--set", "train.epochs=2", "--owner", "workers",
                      env=dict(os.environ, DIMALIGN_WORKERS="0"))
    one_error_line(ran, 2, "DIMALIGN_WORKERS", "at least 1", "'0'")
    for value in ("two", "-1", "1.5"):
        monkeypatch.setenv("DIMALIGN_WORKERS", value)
        one_error_line(cli("submit", "--set", "train.epochs=2", "--owner", "workers"), 2,
                       "DIMALIGN_WORKERS", repr(value))
        one_error_line(cli("scheduler"), 2, "DIMALIGN_WORKERS")  # the foreground one too
    assert not store.runs(owner="workers") and not scheduler_running()  # nothing queued


# ---- late errors


@pytest.mark.parametrize("setting, key, words", [
    ("muda.lambda_da=nan", "muda.lambda_da", "finite"),
    ("muda.lr=nan", "muda.lr", "finite"),
    ("neggrad_plus.lr=inf", "neggrad_plus.lr", "finite"),
    ("muda.lambda_sd=-inf", "muda.lambda_sd", "finite"),
    ("train.lr=nan", "train.lr", "finite"),
    ("train.weight_decay=inf", "train.weight_decay", "finite"),
    ("eval.energy=nan", "eval.energy", "finite"),
    ("seed=4294967296", "seed", "0..4294967295"),
    ("seed=-1", "seed", "0..4294967295"),
    ("muda.k=65", "muda.k", "0..64 (the feature dimension of cnn"),
])
def test_a_bad_number_is_refused_before_anything_trains(setting, key, words, cli, tmp_path):
    home = tmp_path / "home"
    ran = cli("run", "--method", "muda", "--set", "train.epochs=2", "--set", setting, home=home)
    one_error_line(ran, 2, f"invalid setting {key}: ", words)
    assert not (home / "models").exists()  # no baseline was trained


def test_nan_is_refused_with_exit_2_by_the_command_and_by_submit(bare_store, cli, cli_process):
    ran = cli_process("run", "--method", "muda", "--set", "muda.lambda_da=nan")
    one_error_line(ran, 2, "muda.lambda_da: must be a finite number in [0, 1000], got nan")
    queued = cli("submit", "--set", "muda.lambda_da=nan", "--owner", "nan", "--no-start")
    one_error_line(queued, 2, "muda.lambda_da")
    assert not bare_store.runs(owner="nan")


def test_every_knob_and_setting_refuses_nan_and_infinity():
    from dimalign.config import build_config, config_from_dict, load_preset
    from dimalign.errors import ConfigError
    from dimalign.methods import REGISTRY
    from dimalign.methods.base import Knob

    unbounded = Knob(float, 1.0, "no bounds at all", group="G")
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match="finite"):
            unbounded.check("plugin.x", value)
    for name, spec in REGISTRY.items():
        for knob_name, knob in spec.knobs.items():
            if knob.type is float:
                with pytest.raises(ConfigError, match=f"{name}.{knob_name}: .*finite"):
                    build_config("digits-class", [f"{name}.{knob_name}=nan"])
    _, settings = load_preset("digits-class")  # a settings file or stored config, not text
    settings["train"]["momentum"] = float("nan")
    with pytest.raises(ConfigError, match="train.momentum"):
        config_from_dict(settings)


@pytest.mark.parametrize("size", ["3", "5", "-1"])
def test_a_umap_too_small_to_embed_is_refused_before_anything_trains(size, cli, tmp_path):
    home = tmp_path / "home"
    ran = cli("run", "--set", "train.epochs=2", "--umap", size, home=home)
    one_error_line(ran, 2, "--umap", "at least 6", f"got {size}")
    assert not (home / "models").exists()


# ---- divergence


def test_features_that_collapse_inside_a_loss_are_reported_as_divergence(tiny_cfg,
                                                                         tiny_baselines):
    import torch.nn.functional as F

    from dimalign.geometry import top_basis
    from dimalign.methods.base import MethodSpec, Phase, common_knobs
    from dimalign.methods.loop import UnlearningFailed, unlearn

    def loss(ctx, phase, batch):  # a retain basis, as MUDA's forget phase takes one
        ctx.state["steps"] = ctx.state.get("steps", 0) + 1
        feats = ctx.model.features(batch.xr)
        if ctx.state["steps"] >= 3:  # the features collapse at the third step
            feats = feats * 0
        top_basis(feats.detach().float())
        return {"ce": F.cross_entropy(ctx.model.head(feats), batch.yr)}

    spec = MethodSpec("collapse", "Collapse", "collapses at step 3", "none",
                      common_knobs(lr=0.01, epochs=1),
                      lambda ctx, epoch: [Phase("train", "retain", 5)], loss)
    b = tiny_baselines
    with pytest.raises(UnlearningFailed) as info:
        unlearn(tiny_cfg, spec, b.experiment, b.original, b.device)
    message = str(info.value)
    assert message.startswith("collapse: diverged at step 3 (epoch 1, train phase): the "
                              "model's features collapsed (the features are all zero")
    assert "loss term 'ce' was" in message and "at step 2" in message
    assert message.endswith("lower collapse.lr or the weight of that term")


def test_a_run_whose_features_collapse_fails_as_divergence_and_saves_nothing(tiny_baselines,
                                                                             cli_process):
    before = set(paths.runs_dir().iterdir()) if paths.runs_dir().exists() else set()
    ran = cli_process("run", "--set", "train.epochs=2", "--method", "muda", "--set",
                      "muda.lr=10", "--set", "muda.lambda_sd=1000", "--set", "muda.sd=mse",
                      "--set", "muda.epochs=8")
    assert ran.returncode == 1 and "Traceback" not in ran.stderr and ran.stdout == ""
    (line,) = [x for x in said(ran.stderr) if x.startswith("dimalign: ")]
    assert line == said(ran.stderr)[-1]  # the run ends on it
    assert "muda: " in line and " at step " in line and "lower muda.lr" in line, line
    assert "diverged" in line or "became" in line, line  # collapsed features or a NaN loss
    after = set(paths.runs_dir().iterdir()) if paths.runs_dir().exists() else set()
    assert after == before


@pytest.mark.parametrize("value", [0.0, 1.0, float("nan")])
def test_a_constant_model_is_evaluated_and_saved_with_undefined_metrics_as_null(
        value, tiny_cfg, tiny_baselines, tmp_path):
    import copy

    from dimalign.artifacts import load_bundle
    from dimalign.runner import evaluate_and_save

    b = tiny_baselines
    collapsed = copy.deepcopy(b.original)
    width = collapsed.feature_dim
    collapsed.features = lambda x: torch.full((len(x), width), value, device=x.device)
    models = {"original": b.original, "retrained": b.retrained, "unlearned": collapsed}
    folder = tmp_path / "run"
    result = evaluate_and_save(tiny_cfg, "digits-class", "ft", b, models,
                               {**b.seconds, "unlearn": 0.0}, folder, None, [])
    row = result["models"]["unlearned"]
    assert row["cka_retrained"] is None and row["cka_original"] is None
    assert 0 <= row["acc_retain"] <= 1 and 0 <= row["acc_test"] <= 1
    assert row["avg_gap"] is not None
    if value == 0.0:  # no subspace at all: DA and the spectrum are undefined
        assert row["da"] is None and row["da_k"] is None and row["effective_rank"] is None
    saved = json.loads((folder / "result.json").read_text())
    assert saved["models"]["unlearned"] == row
    geometry = load_bundle(folder / "geometry.pt")["models"]["unlearned"]
    assert len(geometry["angles"]) >= 1  # pages index the first angle


# ---- paths


@pytest.fixture()
def exportable(tiny_cfg):
    """A finished run in the store (its files do not matter to a refused destination)."""
    store = Store()
    run_id = store.create_run(owner="paths", kind="unlearn", preset="digits-class",
                              method="muda", config=tiny_cfg.to_dict(), status="done")
    store.close()
    return run_id


def test_export_refuses_a_file_an_unwritable_place_or_an_empty_path_in_one_line(
        exportable, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path must not mean "here"
    afile = tmp_path / "report.txt"
    afile.write_text("mine")
    one_error_line(cli("export", exportable, str(afile)), 2, "is a file", str(afile))
    assert afile.read_text() == "mine"
    one_error_line(cli("export", exportable, "/proc/self/out"), 2, "/proc/self/out")
    one_error_line(cli("export", exportable, "/proc/self"), 2, "/proc/self/config.json")
    one_error_line(cli("export", exportable, ""), 2, "empty path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]
    written = cli("export", exportable, "out")  # a good destination still works
    assert written.returncode == 0 and (tmp_path / "out" / "report.html").exists()


def test_a_home_that_is_a_file_is_named_in_one_line(cli, cli_process, tmp_path):
    afile = tmp_path / "home"
    afile.write_text("not a folder")
    one_error_line(cli_process("runs", home=afile), 2, "DIMALIGN_HOME", str(afile), "folder")
    one_error_line(cli("run", "--set", "train.epochs=2", home=afile), 2, "DIMALIGN_HOME")
    one_error_line(cli("submit", "--set", "train.epochs=2", "--no-start", home=afile), 2,
                   "DIMALIGN_HOME")
    assert afile.read_text() == "not a folder"


def test_a_copied_home_writes_into_the_copy_never_the_original(tiny, cli, tmp_path,
                                                               monkeypatch):
    import dimalign.embed

    def embed_saved_run(folder, samples):  # where the UMAP goes is the point, not the UMAP
        path = dimalign.embed.embedding_path(folder, samples)
        path.write_text("an embedding")
        return path, {"rows": [0] * samples, "backend": "test"}

    monkeypatch.setattr(dimalign.embed, "embed_saved_run", embed_saved_run)
    original, copy = tmp_path / "original", tmp_path / "copy"
    ran = cli("run", *sum((["--set", s] for s in tiny), []), "--json",
              home=original)
    assert ran.returncode == 0, ran.stderr
    folder = json.loads(ran.stdout)["artifacts"]
    name = os.path.basename(folder)
    assert folder == str(original / "runs" / name)  # callers get the absolute folder
    stored = json.loads((original / "runs" / name / "result.json").read_text())
    assert stored["artifacts"] == f"runs/{name}"  # the file: relative to its home
    shutil.copytree(original, copy)
    # a result.json written before paths were relative names the original home's folder
    old = copy / "runs" / name / "result.json"
    old.write_text(json.dumps({**stored, "artifacts": folder}))
    before = sorted(p.name for p in (original / "runs" / name).iterdir())

    again = cli("run", *sum((["--set", s] for s in tiny), []), "--json",
                "--umap", "30", home=copy)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["artifacts"] == str(copy / "runs" / name)
    assert result["umap"]["path"].startswith(str(copy / "runs" / name))
    assert sorted(p.name for p in (original / "runs" / name).iterdir()) == before


def test_the_artifacts_index_of_a_copied_home_points_into_the_copy(tmp_path, monkeypatch):
    original, copy = tmp_path / "original", tmp_path / "copy"
    monkeypatch.setenv("DIMALIGN_HOME", str(original))
    store = Store()
    run_id = store.create_run(owner="paths", kind="unlearn", preset="digits-class",
                              method="muda", config={})
    store.add_artifact(run_id, "result", original / "runs" / run_id / "result.json")
    ((stored,),) = store.db.execute("SELECT path FROM artifacts").fetchall()
    assert stored == f"runs/{run_id}/result.json"
    with store.write() as db:  # as older versions wrote it: absolute, in the original home
        db.execute("INSERT INTO artifacts VALUES (?,?,?,?)",
                   (run_id, "geometry", str(original / "runs" / run_id / "geometry.pt"), 0.0))
    assert store.artifacts(run_id)["geometry"] == original / "runs" / run_id / "geometry.pt"
    store.close()
    shutil.copytree(original, copy)
    monkeypatch.setenv("DIMALIGN_HOME", str(copy))
    copied = Store()
    assert copied.artifacts(run_id) == {"result": copy / "runs" / run_id / "result.json",
                                        "geometry": copy / "runs" / run_id / "geometry.pt"}
    assert copied.get(run_id).folder == copy / "runs" / run_id
    copied.close()


# ---- sweeps


def test_a_key_repeated_in_grid_is_refused_naming_it_and_nothing_is_queued(bare_store, cli):
    ran = cli("sweep", "--set", "train.epochs=2", "--grid", "muda.lambda_da=1,2", "--grid",
              "muda.lambda_da=3", "--owner", "twice")
    one_error_line(ran, 2, "muda.lambda_da", "two --grid options",
                   "--grid muda.lambda_da=1,2,3")
    assert not bare_store.runs(owner="twice") and not scheduler_running()


def test_a_ray_sweep_while_a_local_scheduler_serves_is_refused_before_queueing(bare_store,
                                                                               tiny, cli):
    background_scheduler()  # its runs would not go to Ray: said, not done silently
    ran = cli("sweep", "--backend", "ray", "--set", *tiny, "--grid", "muda.lambda_da=1,2",
              "--owner", "mixed")
    one_error_line(ran, 2, "a local scheduler serves this DIMALIGN_HOME", "--backend local")
    assert not bare_store.runs(owner="mixed")
    one_error_line(cli("sweep", "--address", "10.0.0.1:6379", "--set", *tiny), 2,
                   "--address: goes with --backend ray")


def test_grid_values_equal_after_parsing_make_one_run(tiny):
    from dimalign.sweep import plan

    combos, configs = plan("digits-class", "muda", ["muda.lambda_da=3e-4,0.0003,1"], tiny)
    assert [c.to_dict()["muda"]["lambda_da"] for c in configs] == [3e-4, 1.0]
    assert combos == [[*tiny, "muda.lambda_da=3e-4"], [*tiny, "muda.lambda_da=1"]]


# ---- queues and sweeps at scale
# The scheduler picks from the oldest few ready runs of *every* owner (one SQL query), serving
# owners round robin, so one owner's thousands of queued runs never hold another's back. A
# sweep is a batch with an id: capped per owner before anything is queued, cancelled whole
# (CLI and Tune), and cancelled by Ctrl-C while it is being queued. Lists say what they leave out.
from dimalign.jobs import QueueFull, cancel_sweep  # noqa: E402
from dimalign.sweep import new_sweep_id  # noqa: E402


def queue_many(store: Store, owner: str, count: int, cfg, sweep: str | None = None,
               status: str = "queued") -> None:
    """`count` runs of `cfg` for `owner` in one transaction, as a big sweep leaves them."""
    from dimalign.train import experiment_key

    with store.write() as db:
        for _ in range(count):
            store._insert(db, owner=owner, kind="unlearn", preset="digits-class",
                          method="muda", config=cfg.to_dict(), experiment=experiment_key(cfg),
                          sweep=sweep, status=status)


def test_a_run_behind_2000_queued_runs_of_another_owner_starts_at_the_next_free_slot(
        bare_store, tiny, tiny_cfg, drain):
    store, sweep = bare_store, new_sweep_id()
    queue_many(store, "alice", 2000, tiny_cfg, sweep)
    asked = time.time()
    bob = submit(store, preset="digits-class", overrides=tiny, owner="bob")
    scheduler = Scheduler(store, slots=[Slot(None)])  # one slot: each start is a turnover
    try:
        drain(scheduler, lambda: store.get(bob).status != "queued", timeout=180)
        alice = [r for r in store.runs(owner="alice", limit=None) if r.started]
        # alice's oldest came first (queued first, nobody served yet), then bob: one turnover
        assert len(alice) == 1 and alice[0].finished is not None
        started = store.get(bob).started
        assert started >= alice[0].finished
        print(f"\nbob's run: started {started - alice[0].finished:.2f} s after alice's run "
              f"freed the slot ({alice[0].finished - alice[0].started:.2f} s long), "
              f"{started - asked:.2f} s after it was queued")
        assert store.cancel_sweep(sweep) == (1999, 0)
        drain(scheduler, lambda: store.get(bob).terminal)
        assert store.get(bob).status == "done"
    finally:
        scheduler.close()


def test_a_sweep_over_the_queue_cap_is_refused_in_one_line_before_anything_is_queued(
        bare_store, tiny, tiny_cfg, cli, monkeypatch):
    monkeypatch.setenv("DIMALIGN_QUEUE_CAP", "3")
    ran = cli("sweep", "--set", *tiny, "--grid", "muda.lambda_da=1,2,3,4", "--owner", "capped")
    one_error_line(ran, 2, "'capped'", "4 more would pass the cap of 3", "DIMALIGN_QUEUE_CAP",
                   "nothing was queued")
    assert not bare_store.runs(owner="capped") and not scheduler_running()
    queue_many(bare_store, "capped", 3, tiny_cfg)  # at the cap: one more is refused
    with pytest.raises(QueueFull, match="has 3 runs queued; 1 more"):
        submit(bare_store, preset="digits-class", overrides=tiny, owner="capped")
    assert bare_store.count(owner="capped") == 3
    monkeypatch.setenv("DIMALIGN_QUEUE_CAP", "0")
    one_error_line(cli("submit", "--set", *tiny, "--owner", "other"), 2, "DIMALIGN_QUEUE_CAP",
                   "at least 1")


def test_cancel_sweep_stops_every_run_of_the_sweep_and_only_those(bare_store, tiny, cli):
    store, sweep = bare_store, new_sweep_id()
    ids = {submit(store, preset="digits-class", overrides=[*tiny, f"muda.lambda_da={v}"],
                  owner="batch", sweep=sweep) for v in (1, 2, 3)}
    other = submit(store, preset="digits-class", overrides=tiny, owner="batch")
    listed = cli("runs", "--sweep", sweep, "--json")
    assert {r["id"] for r in json.loads(listed.stdout)} == ids
    assert {r["sweep"] for r in json.loads(listed.stdout)} == {sweep}
    with pytest.raises(OwnerRefused):  # the web app's call needs the owner's key
        cancel_sweep(store, sweep, owner="batch", key=new_owner_key())
    ran = cli("cancel", "--sweep", sweep)
    assert ran.returncode == 0 and ran.stdout.strip() == (
        f"sweep {sweep}: 3 queued run(s) cancelled, 0 running run(s) asked to stop")
    assert {store.get(i).status for i in ids} == {"cancelled"}
    assert store.get(other).status in ACTIVE  # not the sweep's: left alone
    one_error_line(cli("cancel", "--sweep", new_sweep_id()), 2, "no sweep")
    one_error_line(cli("cancel", "--sweep", "../etc"), 2, "not a sweep id")
    one_error_line(cli("runs", "--sweep", "x'--"), 2, "not a sweep id")
    one_error_line(cli("cancel"), 2, "give a run id or --sweep ID")


def test_ctrl_c_while_a_sweep_is_queued_cancels_what_it_had_queued(bare_store, tiny):
    values = ",".join(f"{v / 10:g}" for v in range(1, 1501))  # far more than 2 s of queueing
    proc = dimalign_process("sweep", "--set", *tiny, "--grid", f"muda.lambda_da={values}",
                            "--owner", "impatient")
    first = proc.stderr.readline()  # the sweep's id comes first, before any run is queued
    assert first.startswith("sweep "), first
    sweep = first.split()[1]
    until(lambda: bare_store.count(sweep=sweep) >= 5, 60, "a few runs to be queued")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    (line,) = said(err)
    assert line.startswith(f"dimalign: interrupted while queueing sweep {sweep}: the ")
    assert "are cancelled" in line and out == ""
    queued = bare_store.count(sweep=sweep)
    assert 5 <= queued < 1500
    assert bare_store.count(sweep=sweep, statuses=("cancelled",)) == queued  # none left


def test_runs_says_how_many_more_it_left_out_and_lists_all_on_request(bare_store, tiny_cfg,
                                                                      cli):
    queue_many(bare_store, "many", 1005, tiny_cfg, status="cancelled")
    ran = cli("runs", "--owner", "many")
    assert ran.returncode == 0 and len(said(ran.stdout)) == 1 + 1000  # a header, the newest
    assert said(ran.stderr) == ["5 more runs not shown (the newest 1,000 are): --limit N or "
                                "--all"]
    few = cli("runs", "--owner", "many", "--limit", "3", "--json")
    assert len(json.loads(few.stdout)) == 3 and "1,002 more" in few.stderr
    every = cli("runs", "--owner", "many", "--all", "--json")
    assert len(json.loads(every.stdout)) == 1005 and every.stderr == ""
    one_error_line(cli("runs", "--limit", "0"), 2, "--limit must be at least 1")


import sqlite3  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
# ---- web app and owners
# Owner keys (dimalign/store.py owners table, dimalign/ui/state.py owner()): the first use of
# a name claims it with a key; the address carries both; a visitor without the key is a fresh
# guest with a notice. The engine (jobs.cancel / submit(parent_id=...)) checks the key too.
import base64  # noqa: E402
import tomllib  # noqa: E402

from conftest import TINY  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dimalign.store import (  # noqa: E402
    RESERVED_OWNERS,
    SCHEMA_VERSION,
    OwnerRefused,
    StoreError,
    new_owner_key,
)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A throw-away DIMALIGN_HOME with its store; no scheduler is started from pages."""
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    monkeypatch.delenv("DIMALIGN_ADMIN_KEY", raising=False)
    monkeypatch.setattr("dimalign.daemon.ensure_scheduler", lambda: None)
    store = Store()
    yield store
    store.close()


def add_run(store: Store, owner: str, status: str = "running") -> str:
    """An unlearning run of digits-class (TINY) in `status`, as a worker would have left it (a
    running one's worker is alive: this process stands in for it)."""
    from dimalign.config import build_config
    from dimalign.train import experiment_key

    cfg = build_config("digits-class", TINY)
    run_id = store.create_run(owner=owner, kind="unlearn", preset="digits-class",
                              method="muda", config=cfg.to_dict(),
                              experiment=experiment_key(cfg))
    alive = {"pid": os.getpid(), "heartbeat": time.time()} if status == "running" else {}
    store.update(run_id, status=status, **alive)
    return run_id


def app(owner: str | None = None, key: str | None = None, **params) -> AppTest:
    """The dashboard on the Experiment page with these address parameters (TINY settings)."""
    at = AppTest.from_file(APP, default_timeout=60)
    for name, value in (("owner", owner), ("key", key), *params.items()):
        if value is not None:
            at.query_params[name] = value
    at.session_state["overrides"] = TINY
    at.session_state["overrides_for"] = "digits-class"
    at.run()
    assert not at.exception, at.exception
    return at


def param(at: AppTest, name: str) -> str | None:
    value = at.query_params.get(name)
    return value[0] if isinstance(value, list) else value


def who(at: AppTest):
    return at.session_state["_identity"]


def keys_on(at: AppTest) -> set[str]:
    return {b.key for b in at.button} | {t.key for t in at.toggle}


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


def test_owner_keys_are_128_random_bits_and_the_store_keeps_only_their_hash(home):
    keys = {new_owner_key() for _ in range(1000)}
    assert len(keys) == 1000
    for key in list(keys)[:20]:
        assert len(base64.urlsafe_b64decode(key + "==")) * 8 >= 96  # 128 bits in fact
    key = new_owner_key()
    assert home.claim_owner("alice", key)
    home.close()
    raw = b"".join(p.read_bytes() for p in home.path.parent.glob("runs.sqlite*"))
    assert key.encode() not in raw
    with sqlite3.connect(home.path) as db:
        (digest,) = db.execute("SELECT key_hash FROM owners WHERE name = 'alice'").fetchone()
    assert len(digest) == 64 and digest != key


def test_the_first_use_claims_a_name_and_later_callers_need_its_key(home):
    key, other = new_owner_key(), new_owner_key()
    assert not home.owner_claimed("alice")
    assert home.claim_owner("alice", key)  # claimed
    assert home.claim_owner("alice", key)  # the same key: still alice
    assert not home.claim_owner("alice", other)  # someone else with her name
    home.check_owner_key("alice", key)
    for wrong in (other, "", None, key[:-1]):
        with pytest.raises(OwnerRefused):
            home.check_owner_key("alice", wrong)
    with pytest.raises(StoreError, match="owner key"):
        home.claim_owner("bob", "short")  # a weak key chosen by hand is no key


def test_reserved_names_are_refused_whatever_their_case(home):
    from dimalign.cli import build_parser
    from dimalign.jobs import SHARED_OWNER, submit

    # every owner the engine and the command line write by themselves is reserved
    parser = build_parser()
    defaults = {parser.parse_args(["submit"]).owner, parser.parse_args(["sweep"]).owner}
    assert {SHARED_OWNER, "admin"} | defaults <= RESERVED_OWNERS
    for name in (*RESERVED_OWNERS, "Shared", "ADMIN"):
        with pytest.raises(OwnerRefused, match="reserved"):
            home.claim_owner(name, new_owner_key())
    for name in ("shared", "admin", "Admin"):  # not names to submit under, even locally
        with pytest.raises(OwnerRefused, match="reserved"):
            submit(home, preset="digits-class", overrides=TINY, owner=name)


def test_cancel_and_fork_are_refused_in_the_engine_without_the_owners_key(home):
    from dimalign.jobs import cancel, resume, submit

    alice, mallory = new_owner_key(), new_owner_key()
    assert home.claim_owner("alice", alice) and home.claim_owner("mallory", mallory)
    run = add_run(home, "alice")
    for owner, key in (("alice", mallory), ("alice", None), ("alice", ""),
                       ("mallory", mallory), (None, alice)):
        with pytest.raises(OwnerRefused):
            cancel(home, run, owner, key if key is not None or owner is None else None)
        with pytest.raises(OwnerRefused):
            submit(home, preset="digits-class", overrides=["muda.lambda_da=1"],
                   owner=owner or "mallory", key=key if key is not None else "",
                   parent_id=run)
    assert not home.get(run).cancel_requested and len(home.runs(kind="unlearn")) == 1
    failed = add_run(home, "alice", "failed")
    with pytest.raises(OwnerRefused):
        resume(home, failed, "mallory", mallory)

    # alice's key: she forks, then cancels; her runs only
    child = submit(home, preset="digits-class", overrides=["muda.lambda_da=1"], owner="alice",
                   key=alice, parent_id=run)
    assert home.get(child).parent_id == run and home.get(child).owner == "alice"
    assert cancel(home, run, "alice", alice).cancel_requested
    with pytest.raises(OwnerRefused, match="another owner"):
        submit(home, preset="digits-class", owner="mallory", key=mallory, parent_id=run)

    # the command line's user owns the machine: no key, any run
    assert cancel(home, child).status == "cancelled"
    assert resume(home, failed).status == "queued"


def test_the_instructor_view_can_change_nothing_in_the_engine(home):
    from dimalign.jobs import cancel, submit
    from dimalign.store import ADMIN_OWNER

    run = add_run(home, "alice")
    with pytest.raises(OwnerRefused):
        cancel(home, run, ADMIN_OWNER, "")
    with pytest.raises(OwnerRefused):
        submit(home, preset="digits-class", overrides=TINY, owner=ADMIN_OWNER, key="",
               parent_id=run)
    assert not home.get(run).cancel_requested


def test_a_schema_1_store_gets_the_owners_table_and_its_names_stay_claimable(tmp_path):
    path = tmp_path / "runs.sqlite"
    shutil.copy(Path(__file__).parent / "data" / "store-v1.sqlite", path)
    store = Store(path)
    with sqlite3.connect(path) as db:  # upgraded through every version to the current one
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert int(version[0]) == SCHEMA_VERSION
        assert db.execute("SELECT COUNT(*) FROM owners").fetchone() == (0,)
    # an owner of earlier runs has no key yet: the first web visitor with the name claims it
    assert store.claim_owner("alice", new_owner_key())
    assert {r.owner for r in store.runs()} >= {"alice", "bob", "shared"}
    store.close()


def test_a_new_visitor_gets_a_guest_name_and_a_key_in_the_address(home):
    at = app()
    me = who(at)
    assert me.name.startswith("guest-") and not me.admin
    assert (param(at, "owner"), param(at, "key")) == (me.name, me.key)
    assert len(base64.urlsafe_b64decode(me.key + "==")) * 8 >= 96
    assert not at.warning  # nothing was replaced
    again = app(me.name, me.key)  # the bookmarked address, in a new session
    assert who(again) == me and not again.warning


def test_a_name_without_its_key_is_a_fresh_guest_with_a_notice(home, monkeypatch):
    # AppTest starts every run of a page in Streamlit's pages/ mode, which deeplink.in_frame
    # leaves by rerunning, and a rerun drops a button's click: run the page as it is
    monkeypatch.setattr("dimalign.ui.deeplink.in_frame", lambda: None)
    key = new_owner_key()
    assert home.claim_owner("alice", key)
    run = add_run(home, "alice")
    at = app("alice", run=run)  # alice's name and run id, not her key
    me = who(at)
    assert me.name.startswith("guest-") and me.name != "alice"
    assert param(at, "owner") == me.name and param(at, "key") == me.key
    assert "`alice` is taken" in warnings(at) and me.name in warnings(at)
    at.switch_page("pages/unlearn.py").run()
    assert not at.exception
    assert "cancel_button" not in keys_on(at) and "fork_button" not in keys_on(at)
    assert not [s for s in at.selectbox if s.label == "Run"]  # none of alice's runs listed
    assert "taken" in warnings(at)  # the notice stays until it is dismissed
    at.button(key="owner_notice_ok").click().run()
    assert not at.warning and not home.get(run).cancel_requested

    # with her key it is alice, and she can cancel her run
    at = app("alice", key, run=run)
    assert who(at).name == "alice" and not at.warning
    at.switch_page("pages/unlearn.py").run()
    at.button(key="cancel_button").click().run()
    assert not at.exception and home.get(run).cancel_requested


@pytest.mark.parametrize("asked, why", [("../etc", "not allowed"), ("a b", "not allowed"),
                                        ("shared", "reserved"), ("Admin", "reserved"),
                                        ("[x](http://e.vil)", "not allowed")])
def test_an_invalid_or_reserved_owner_in_the_address_is_replaced_with_a_notice(home, asked,
                                                                                why):
    at = app(asked)
    me = who(at)
    assert me.name.startswith("guest-") and param(at, "owner") == me.name
    assert why in warnings(at) and me.name in warnings(at)
    assert "http" not in warnings(at)  # the address's text is not echoed as markdown
    assert not home.owner_claimed(asked)


def test_the_instructor_key_shows_every_run_read_only(home, monkeypatch):
    admin = new_owner_key()
    monkeypatch.setenv("DIMALIGN_ADMIN_KEY", admin)
    runs = {owner: add_run(home, owner, status) for owner, status in
            (("alice", "running"), ("bob", "done"))}
    at = app(admin=admin)
    assert who(at).admin and not at.warning
    assert "Instructor's view" in " ".join(c.value for c in at.sidebar.caption)
    assert "train_baselines" not in keys_on(at)
    at.switch_page("pages/unlearn.py").run()
    assert not at.exception
    (picker,) = [s for s in at.selectbox if s.label == "Run"]
    assert set(picker.options) >= {f"alice · {runs['alice']} · muda · running",
                                   f"bob · {runs['bob']} · muda · done"}
    assert not keys_on(at) & {"run_button", "cancel_button", "fork_button", "auto_run"}
    assert any("read-only" in i.value for i in at.info)
    assert not home.get(runs["alice"]).cancel_requested

    # a wrong instructor key is an ordinary guest, told so
    wrong = app(admin="not-the-key")
    assert not who(wrong).admin and who(wrong).name.startswith("guest-")
    assert "instructor key" in warnings(wrong) and param(wrong, "admin") is None
    monkeypatch.delenv("DIMALIGN_ADMIN_KEY")
    unset = app(admin=admin)
    assert not who(unset).admin and "no DIMALIGN_ADMIN_KEY" in warnings(unset)


def test_pages_say_how_many_runs_their_lists_leave_out(home, tiny_cfg):
    key = new_owner_key()
    assert home.claim_owner("lister", key)
    queue_many(home, "lister", 503, tiny_cfg, status="cancelled")
    at = app("lister", key)
    at.switch_page("pages/unlearn.py").run()
    assert not at.exception, at.exception
    (picker,) = [s for s in at.selectbox if s.label == "Run"]
    assert len(picker.options) == 500
    notes = " ".join(c.value for c in at.caption)
    assert "the newest 500 runs; 3 older ones are not" in notes
    at.switch_page("pages/compare.py").run()
    assert "3 older ones are not" in " ".join(c.value for c in at.caption)


def test_tune_cancels_a_whole_sweep_with_one_press_and_only_with_the_owners_key(home, tiny):
    key, sweep = new_owner_key(), new_sweep_id()
    assert home.claim_owner("tuner", key)
    ids = [submit(home, preset="digits-class", overrides=[*tiny, f"muda.lambda_da={v}"],
                  owner="tuner", key=key, sweep=sweep) for v in (1, 2, 3)]
    home.update(ids[0], status="running", pid=os.getpid(), heartbeat=time.time())
    at = app("tuner", key, sweep=",".join(ids), sweep_knobs="lambda_da")
    at.switch_page("pages/tune.py").run()
    assert not at.exception, at.exception
    at.button(key="tune_cancel").click().run()
    assert "Sweep cancelled: 2 queued run(s) dropped, 1 running run(s) stopping." in [
        i.value for i in at.info]
    assert [home.get(i).status for i in ids[1:]] == ["cancelled", "cancelled"]
    assert home.get(ids[0]).cancel_requested
    # someone else's address naming the sweep sees none of it, and no button to cancel it
    guest = app(None, None, sweep=",".join(ids), sweep_knobs="lambda_da")
    guest.switch_page("pages/tune.py").run()
    assert not [b for b in guest.button if b.key == "tune_cancel"]
    home.update(ids[0], status="cancelled", pid=None)


def test_the_experiment_page_switches_between_every_forget_scenario(home):
    """Class → random → backdoor → class on the Experiment page: each switch draws the new
    scenario's controls with the experiment's values (the control of the kind before was not
    drawn: the switch once read it, and the page showed an AttributeError)."""
    at = app()
    for kind, said in (("random", "a random 10% of training samples"),
                       ("backdoor", "stamped with a trigger"), ("class", "classes 3")):
        at.selectbox(key="exp_kind").set_value(kind).run()
        assert not at.exception, (kind, at.exception)
        assert not at.error, (kind, [e.value for e in at.error])
        assert any(said in m.value for m in at.markdown), kind
    assert at.session_state["overrides"] == ["scenario.kind=class", "seed=0",
                                             "scenario.classes=3"]


def test_the_experiment_page_keeps_its_controls_when_its_settings_are_invalid(home):
    at = app()
    at.multiselect(key="exp_classes").set_value([]).run()
    assert not at.exception
    assert any("forget set is empty" in e.value for e in at.error)
    assert at.multiselect(key="exp_classes").value == []  # the controls are still there
    at.multiselect(key="exp_classes").set_value([5]).run()  # and lead back
    assert not at.exception and not at.error
    assert any("classes 5" in m.value for m in at.markdown)

    # or the way back to the preset's own settings
    at.multiselect(key="exp_classes").set_value([]).run()
    at.number_input(key="exp_seed").set_value(7).run()  # still invalid: controls still work
    assert any("forget set is empty" in e.value for e in at.error)
    at.button(key="settings_reset").click().run()
    assert not at.exception and not at.error
    assert at.session_state["overrides"] == []
    assert at.multiselect(key="exp_classes").value == [3]
    assert any("classes 3" in m.value for m in at.markdown)


def test_an_error_no_page_catches_shows_the_browser_no_traceback_path_or_message():
    """What Streamlit sends a browser for an uncaught exception, under the app's own
    `client.showErrorDetails`: its type at most, never the traceback's files and code or the
    message. (The config once said `false`, which Streamlit reads as "stacktrace": the file,
    the line and the code went to every browser.)"""
    from streamlit import config
    from streamlit.elements import exception as shown
    from streamlit.proto.Exception_pb2 import Exception as ExceptionProto

    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        setting = tomllib.load(fh)["client"]["showErrorDetails"]
    before = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", setting)
    try:
        try:
            raise KeyError(f"{ROOT}/secret/path")  # an error from deep in the server
        except KeyError as err:
            proto = ExceptionProto()
            shown.marshall(proto, err, apply_show_error_details=True)
    finally:
        config.set_option("client.showErrorDetails", before)
    assert not proto.stack_trace
    assert str(ROOT) not in proto.message and "secret" not in proto.message
    assert "test_hostile.py" not in str(proto)


def test_a_damaged_geometry_file_is_one_readable_error_line(home):
    key = new_owner_key()
    assert home.claim_owner("alice", key)
    run = add_run(home, "alice", "done")
    folder = home.get(run).folder
    folder.mkdir(parents=True)
    (folder / "geometry.pt").write_bytes(b"\x00not a torch file" * 64)
    at = app("alice", key, run=run)
    for page in ("pages/spectra.py", "pages/angles.py", "pages/manifolds.py", "pages/learn.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        (error,) = [e.value for e in at.error]
        assert f"Run {run}'s saved geometry cannot be read" in error and "Run it again" in error
        assert str(folder) not in error


# ---- the web is a trust boundary: paths typed into a page
# A page reads a folder or a checkpoint only under the roots whoever starts the server names
# (DIMALIGN_DATA_ROOTS, paths.web_path), resolved (symlinks followed) first, and a refusal says
# nothing about what lies at the path: no folder names, no "does not exist" oracle.
from dimalign.paths import DATA_ROOTS_ENV, PathError, web_path  # noqa: E402


def refusal(text: str, what: str = "The image folder") -> str:
    with pytest.raises(PathError) as err:
        web_path(text, what)
    return str(err.value)


def test_with_no_roots_a_page_path_is_refused_before_anything_is_looked_up(monkeypatch):
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)

    def looked_up(*args, **kwargs):
        raise AssertionError("a path from a page was looked up")

    monkeypatch.setattr(Path, "resolve", looked_up)
    monkeypatch.setattr(os, "stat", looked_up)
    for typed in ("/etc", "/etc/shadow", "relative/imgs", "/no/such/folder"):
        text = refusal(typed)
        assert DATA_ROOTS_ENV in text and "reads no folder or file named on a page" in text
        assert typed not in text


def test_a_page_path_outside_the_roots_is_refused_alike_whatever_is_there(tmp_path,
                                                                           monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "imgs").mkdir(parents=True)
    (outside / "secret-folder-name").mkdir(parents=True)
    (outside / "weights.pt").write_bytes(b"x")
    (root / "escape").symlink_to(outside)  # a link inside the root to a folder outside it
    (root / "loop").symlink_to(root / "loop")
    monkeypatch.setenv(DATA_ROOTS_ENV, str(root))
    rule = refusal(str(outside))
    assert rule.startswith("The image folder must lie under this server's data roots")
    (outside / "link").symlink_to(outside / "secret-folder-name")
    for typed in (str(outside / "secret-folder-name"), str(outside / "missing"),
                  str(outside / "weights.pt"), "../outside", str(root / "escape"),
                  "escape/secret-folder-name", "/etc", "/etc/shadow", "/no/such/file.pt",
                  # ".." after a link and after a folder: resolving would tell them apart
                  f"{outside}/link/../../root/imgs",
                  f"{outside}/secret-folder-name/../../root/imgs",
                  str(root / "imgs" / ".." / "imgs")):
        assert refusal(typed) == rule, typed  # one message: no listing, no existence oracle
    assert "secret-folder-name" not in rule and str(outside) not in rule
    assert refusal(str(root / "loop")) == rule and refusal("") == rule
    # inside the roots: the resolved absolute path (a relative one under the first root)
    assert web_path("imgs", "x") == str((root / "imgs").resolve())
    assert web_path(str(root / "imgs"), "x") == str((root / "imgs").resolve())
    # a root holding dimalign's own home (others' uploads, runs, models): that part is refused
    monkeypatch.setenv("DIMALIGN_HOME", str(root / "imgs" / "home"))
    assert refusal(str(root / "imgs" / "home" / "uploads")) == rule
    assert web_path(str(root / "imgs"), "x") == str((root / "imgs").resolve())
    # roots inside the home can never be read: the server's set-up is named, not the typed path
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    told = refusal(str(root / "imgs"))
    assert "lie inside dimalign's home" in told and DATA_ROOTS_ENV in told


def test_the_experiment_page_reads_no_path_without_roots_and_says_how(home, monkeypatch):
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    at = app()
    assert at.text_input(key="own_root").disabled and at.text_input(key="own_checkpoint").disabled
    assert any(DATA_ROOTS_ENV in i.value for i in at.info)


def test_the_experiment_page_refuses_a_server_path_in_one_line_naming_no_folder(home, tmp_path,
                                                                                 monkeypatch):
    root = tmp_path.with_name(f"{tmp_path.name}-participants")  # outside the home
    root.mkdir()
    monkeypatch.setenv(DATA_ROOTS_ENV, str(root))
    at = app()
    assert not at.text_input(key="own_root").disabled
    messages = []
    for field, typed in (("own_root", "/etc"), ("own_checkpoint", "/etc/shadow"),
                         ("own_checkpoint", "/no/such/file.pt")):
        at.text_input(key="own_root").input("")
        at.text_input(key="own_checkpoint").input("")
        at.text_input(key=field).input(typed)
        at.button(key="own_apply").click().run()
        assert not at.exception and len(at.error) == 1
        messages.append(at.error[0].value)
        assert at.session_state["overrides"] == TINY  # nothing changed
    assert "must lie under this server's data roots" in messages[0]
    assert not [n for n in os.listdir("/etc") if len(n) > 3 and n in messages[0]]
    assert messages[1] == messages[2]  # the checkpoint that exists and the one that does not


import contextlib  # noqa: E402
import errno  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from dimalign import checked  # noqa: E402
from dimalign.train import cache_key, cache_path  # noqa: E402

# ---- damaged files


def one_line(stderr: str, *words: str) -> str:
    """The one stderr line that holds every word (there is exactly one), with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if all(w in line for w in words)]
    assert len(lines) == 1, stderr
    return lines[0]


def aside(path: Path) -> list[Path]:
    """Where a damaged file was set aside (its name with .damaged-<UTC time>)."""
    return sorted(p for p in path.parent.glob(f"{path.name}.damaged-*")
                  if not p.name.endswith(checked.SUFFIX))


@pytest.fixture()
def copied_home(tmp_path, monkeypatch, tiny_cfg, tiny_baselines):
    """A home of its own holding a copy of the tiny baselines (damage stays in this test)."""
    copied_home = tmp_path / "home"
    (copied_home / "models").mkdir(parents=True)
    for role in ("original", "retrained"):
        pt = Path(cache_path(cache_key(tiny_cfg, role)))
        for source in (pt, checked.sidecar(pt), pt.with_suffix(".json"),
                       checked.sidecar(pt.with_suffix(".json"))):
            shutil.copy2(source, copied_home / "models" / source.name)
    monkeypatch.setenv("DIMALIGN_HOME", str(copied_home))
    return copied_home


def model_file(cfg, role: str) -> Path:
    return Path(cache_path(cache_key(cfg, role)))  # under the current DIMALIGN_HOME


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def tensors(obj):
    """Every tensor in a (nested) state dict."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict | list | tuple):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from tensors(value)


def flip_a_weight(path: Path) -> None:
    """Flip one low bit of one stored weight: the file still loads, a weight is wrong."""
    import torch

    data = bytearray(path.read_bytes())
    # a weight stored once (a checkpoint also keeps copies of earlier weights for its film)
    weight = next(t for t in tensors(torch.load(path, weights_only=True))
                  if t.dtype == torch.float32 and t.numel() > 16
                  and data.count(t.numpy().tobytes()) == 1)
    at = data.find(weight.numpy().tobytes())
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    after = list(tensors(torch.load(path, weights_only=True)))  # still loads
    assert not any(a.shape == weight.shape and torch.equal(a, weight) for a in after)


DAMAGE = {"truncated": truncate, "garbage": garbage, "byte-flipped": flip_a_weight}


def _store_with_runs(copied_home: Path) -> tuple[Path, list[str]]:
    from dimalign.store import Store

    store = Store(copied_home / "runs.sqlite")
    ids = [store.create_run(owner="ann", kind="unlearn", preset="digits-class", method="muda",
                            config={"n": i}) for i in range(40)]
    for run_id in ids:
        store.log_metrics(run_id, 0, {"acc": 0.5})
        (copied_home / "runs" / run_id).mkdir(parents=True)
        (copied_home / "runs" / run_id / "result.json").write_text("{}")
    store.close()
    return copied_home / "runs.sqlite", ids


STORE_DAMAGE = {"garbage": garbage, "truncated": truncate,
                "zero-length": lambda path: path.write_bytes(b"")}


@pytest.mark.parametrize("kind", list(STORE_DAMAGE))
def test_a_damaged_store_is_named_left_alone_and_every_command_exits_2(kind, tmp_path, cli,
                                                                         cli_process):
    copied_home = tmp_path / "home"
    path, ids = _store_with_runs(copied_home)
    STORE_DAMAGE[kind](path)
    before = path.read_bytes()
    commands = [("runs",), ("runs", "--json"), ("watch", ids[0]), ("cancel", ids[0]),
                ("resume", ids[0]), ("export", ids[0], str(tmp_path / "out")),
                ("submit", "--no-start", "--set", "train.epochs=2"),
                ("sweep", "--grid", "muda.lambda_da=1,2", "--set", "train.epochs=2"),
                ("scheduler", "--idle-exit", "1")]
    for args in commands:
        ran = cli(*args, home=copied_home)
        assert ran.returncode == 2, (args, ran.stderr)
        line = one_line(ran.stderr, str(path), "damaged")
        assert f"mv {path} {path}.bak" in line and "run folders" in line, line
        assert ran.stdout == ""
    ran = cli_process("runs", home=copied_home)  # the real streams of a process of its own
    assert ran.returncode == 2 and ran.stdout == ""
    one_line(ran.stderr, str(path), "damaged")
    assert path.read_bytes() == before  # never overwritten, never "repaired"
    assert sorted(p.name for p in (copied_home / "runs").iterdir()) == sorted(ids)

    # what the message says to do works, and keeps the run folders
    os.replace(path, f"{path}.bak")
    ran = cli("runs", home=copied_home)
    assert ran.returncode == 0 and ran.stdout.count("\n") == 1  # a new, empty store
    assert sorted(p.name for p in (copied_home / "runs").iterdir()) == sorted(ids)
    assert Path(f"{path}.bak").read_bytes() == before


def test_a_page_shows_a_damaged_store_as_a_message_not_an_exception(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    copied_home = tmp_path / "home"
    path, _ = _store_with_runs(copied_home)
    garbage(path)
    monkeypatch.setenv("DIMALIGN_HOME", str(copied_home))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"),
                           default_timeout=60)
    at.query_params["owner"] = "tester"
    at.run()
    assert not at.exception, at.exception
    assert any(str(path) in e.value and "damaged" in e.value for e in at.error), at.error


def test_a_new_store_is_never_an_empty_file_another_opener_could_see(tmp_path):
    from dimalign.store import Store

    path = tmp_path / "runs.sqlite"
    Store(path).close()
    assert path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["runs.sqlite"]  # nothing left beside it


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_cached_model_is_set_aside_and_trained_again(kind, copied_home, tiny_cfg, cli):
    original = model_file(tiny_cfg, "original")
    DAMAGE[kind](original)
    damaged = original.read_bytes()
    ran = cli("run", "--set", "train.epochs=2", "--json")
    assert ran.returncode == 0, ran.stderr
    line = one_line(ran.stderr, "cached original model was damaged")
    (moved,) = aside(original)
    assert f"set aside as {moved}" in line and line.endswith("training it again")
    assert moved.read_bytes() == damaged  # kept as it was, for a look
    assert checked.verify(original)  # the new one, with its sha256
    result = json.loads(ran.stdout)
    assert result["cached"]["original"] is False and result["cached"]["retrained"] is True
    assert result["models"]["original"]["acc_retain"] > 0.5  # a trained model, not noise
    again = cli("run", "--set", "train.epochs=2", "--json")
    assert again.returncode == 0 and "damaged" not in again.stderr
    assert json.loads(again.stdout)["cached"]["result"] is True


def test_a_model_cached_before_checksums_is_adopted_when_it_loads(copied_home, tiny_cfg):
    from dimalign.train import get_baselines

    original = model_file(tiny_cfg, "original")
    checked.sidecar(original).unlink()
    said = []
    b = get_baselines(tiny_cfg, say=said.append)
    assert said == [] and b.cached == {"original": True, "retrained": True}
    assert checked.verify(original)  # its sidecar was written on the way


@pytest.mark.parametrize("name", ["geometry.pt", "unlearned.pt"])
def test_a_damaged_file_of_a_saved_result_is_set_aside_and_the_result_computed_again(
        name, copied_home, cli):
    args = ("run", "--set", "train.epochs=2", "--method", "ga", "--json")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    folder = Path(json.loads(first.stdout)["artifacts"])
    flip_a_weight(folder / name) if name == "unlearned.pt" else garbage(folder / name)
    damaged = (folder / name).read_bytes()
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    line = one_line(again.stderr, str(folder / name), "damaged")
    assert line.endswith("computing the result again")
    (moved,) = aside(folder / name)
    assert moved.read_bytes() == damaged
    result = json.loads(again.stdout)
    assert "result" not in result["cached"]  # computed, not reused
    assert all(checked.verify(folder / n) for n in ("result.json", "geometry.pt",
                                                   "telemetry.json", "unlearned.pt"))
    assert result["models"] == json.loads(first.stdout)["models"]  # deterministic on a CPU


@pytest.fixture()
def done_run(copied_home, tiny, monkeypatch):
    """A MUDA run finished by the worker's own function, in this process."""
    from dimalign.jobs import submit
    from dimalign.store import Store
    from dimalign.worker import work

    store = Store()
    run_id = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=2"],
                    owner="ann")
    assert work(str(copied_home), run_id) is None
    assert store.get(run_id).status == "done", store.get(run_id).error
    yield store, run_id
    store.close()


def test_a_damaged_parent_fails_its_fork_with_one_line_and_export_leaves_it_out(
        done_run, copied_home, cli, tmp_path):
    from dimalign.jobs import submit
    from dimalign.worker import work

    store, parent = done_run
    weights = store.get(parent).folder / "unlearned.pt"
    flip_a_weight(weights)
    fork = submit(store, preset="digits-class", overrides=["muda.lambda_da=1"], owner="ann",
                  parent_id=parent)
    assert work(str(copied_home), fork) is None
    run = store.get(fork)
    assert run.status == "failed"
    assert run.error.startswith(f"cannot fork run {parent}: {weights} is damaged")
    (moved,) = aside(weights)
    assert f"set aside as {moved}" in run.error and "\n" not in run.error

    garbage(store.get(parent).folder / "geometry.pt")
    ran = cli("export", parent, str(tmp_path / "out"))
    assert ran.returncode == 0, ran.stderr
    one_line(ran.stderr, "geometry.pt is damaged", "no spectra figure")
    exported = {p.name for p in (tmp_path / "out").rglob("*")}
    assert "spectra.html" not in exported and "unlearned.pt" not in exported
    assert {"config.json", "metrics.csv", "report.html", "result.json"} <= exported
    assert aside(store.get(parent).folder / "geometry.pt")


@pytest.mark.parametrize("kind", ["truncated", "byte-flipped"])
def test_a_damaged_worker_checkpoint_on_resume_restarts_the_run_from_step_0(
        kind, done_run, copied_home, capsys):
    from dimalign.jobs import resume
    from dimalign.worker import work

    store, run_id = done_run
    folder = store.get(run_id).folder
    steps = [s for s, _ in store.curve(run_id, "acc_forget")]
    store.update(run_id, status="interrupted")  # as if its worker died after a checkpoint
    DAMAGE[kind](folder / "checkpoint.pt")
    damaged = (folder / "checkpoint.pt").read_bytes()
    resume(store, run_id)
    capsys.readouterr()
    assert work(str(copied_home), run_id) is None
    run = store.get(run_id)
    assert run.status == "done", run.error
    line = one_line(capsys.readouterr().err, "checkpoint was damaged")
    (moved,) = aside(folder / "checkpoint.pt")
    assert f"set aside as {moved}" in line and line.endswith("starting again from step 0")
    assert moved.read_bytes() == damaged
    assert checked.verify(folder / "checkpoint.pt")  # the restarted run's own
    assert [s for s, _ in store.curve(run_id, "acc_forget")] == steps  # none twice


def test_a_deliberate_edit_is_accepted_once_resealed(tmp_path):
    path = tmp_path / "x.json"
    checked.save_json({"a": 1}, path)
    path.write_text('{"a": 2}')
    checked.reseal(path)
    assert checked.load_json(path) == {"a": 2} and not aside(path)


# ---- full disk


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".new"))]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8m"):
    """A tmpfs of `size` at `path`, with `fill()` and `free()`; None where mounting is not
    possible (not root, no tmpfs): callers then simulate the full disk in this process."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True).returncode != 0:
        yield None
        return

    class Disk:
        filler = path / f"filler-{uuid.uuid4().hex[:6]}"

        def fill(self) -> None:
            with open(self.filler, "ab") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()

        def free(self) -> None:
            self.filler.unlink(missing_ok=True)

    try:
        yield Disk()
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_run_on_a_full_disk_fails_with_one_line_and_leaves_no_temp_files(copied_home, cli,
                                                                          monkeypatch):
    before = set((copied_home / "runs").iterdir()) if (copied_home / "runs").exists() else set()
    monkeypatch.setattr(os, "fsync", enospc)  # every checked file's write ends here
    ran = cli("run", "--set", "train.epochs=2", "--method", "ga", "--fresh")
    assert ran.returncode == 1
    line = one_line(ran.stderr, "disk full at")
    assert line.startswith(f"dimalign: disk full at {copied_home / 'runs'}"), line
    assert line == ran.stderr.strip().splitlines()[-1]
    assert leftovers(copied_home) == []
    assert set((copied_home / "runs").iterdir()) == before  # no half-written result


def test_a_worker_job_on_a_full_disk_fails_naming_the_file_and_the_scheduler_goes_on(
        copied_home, tiny, drain, monkeypatch):
    from dimalign.jobs import submit
    from dimalign.scheduler import Scheduler, Slot
    from dimalign.store import Store
    from dimalign.worker import work

    store = Store()
    overrides = tiny + ["muda.epochs=2"]
    with small_disk(copied_home / "runs", "4m") as disk:
        run_id = submit(store, preset="digits-class", overrides=overrides, owner="ann")
        scheduler = Scheduler(store, slots=[Slot(None)])
        try:
            if disk is not None:  # root: the runs folder really is full; a real worker
                disk.fill()
                drain(scheduler, lambda: store.get(run_id).terminal, timeout=180)
            else:  # simulated in this process, through the worker's own function
                with monkeypatch.context() as patch:
                    patch.setattr(os, "fsync", enospc)
                    assert work(str(copied_home), run_id) is None
            run = store.get(run_id)
            assert run.status == "failed"
            assert run.error.startswith(f"disk full at {copied_home / 'runs' / run_id}"), run.error
            assert "\n" not in run.error and leftovers(copied_home) == []
            if disk is not None:
                disk.free()
            # space again: the same scheduler (and worker) runs the next job
            again = submit(store, preset="digits-class", overrides=overrides, owner="ann")
            drain(scheduler, lambda: store.get(again).terminal, timeout=180)
            assert store.get(again).status == "done", store.get(again).error
        finally:
            scheduler.close()
    store.close()


class _FullDb:
    """A connection on a full disk: SQLite refuses every write transaction."""

    in_transaction = False

    def execute(self, *_args):
        raise sqlite3.OperationalError("database or disk is full")


def test_the_scheduler_survives_a_full_disk_and_records_the_dead_worker_after(
        copied_home, tiny, capsys, monkeypatch):
    import dimalign.store
    from dimalign.jobs import submit
    from dimalign.scheduler import Scheduler
    from dimalign.store import Store

    store = Store()
    run_id = submit(store, preset="digits-class", overrides=tiny, owner="ann")
    dead = subprocess.Popen(["sleep", "30"])
    store.update(run_id, status="running", pid=dead.pid, heartbeat=time.time())
    dead.kill()
    dead.wait()
    real = dimalign.store._transaction
    monkeypatch.setattr(dimalign.store, "_transaction", lambda db, path: real(_FullDb(), path))
    scheduler = Scheduler(store, slots=[])
    capsys.readouterr()
    for _ in range(3):
        scheduler.tick()  # does not raise: logs once, tries again every tick
    line = one_line(capsys.readouterr().err, "disk full at")
    assert line == f"dimalign scheduler: disk full at {store.path}: free some space, then try " \
                   "again; trying again every tick"
    assert store.get(run_id).status == "running"  # nothing could be written
    monkeypatch.setattr(dimalign.store, "_transaction", real)  # space again
    scheduler.tick()
    run = store.get(run_id)
    assert run.status == "interrupted" and "resume" in run.error
    assert "works again" in capsys.readouterr().err
    store.close()


def test_a_worker_that_cannot_record_its_ending_hands_it_to_the_scheduler(copied_home, tiny,
                                                                          monkeypatch):
    import dimalign.store
    from dimalign.jobs import submit
    from dimalign.scheduler import Scheduler, Slot
    from dimalign.store import Store
    from dimalign.worker import _execute, work

    store = Store()
    run_id = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=2"],
                    owner="ann")
    real = dimalign.store._transaction

    def full_at_the_end(*args):  # the job runs; then the disk is full
        result = _execute(*args)
        monkeypatch.setattr(dimalign.store, "_transaction",
                            lambda db, path: real(_FullDb(), path))
        return result

    monkeypatch.setattr("dimalign.worker._execute", full_at_the_end)
    ending = work(str(copied_home), run_id)
    assert ending["status"] == "done" and ending["result"]["models"]
    assert store.get(run_id).status == "running"
    scheduler = Scheduler(store, slots=[Slot(None)])
    scheduler.endings[run_id] = ending  # what the worker's "idle" message carries
    monkeypatch.setattr(scheduler, "start_eligible", lambda: None)
    scheduler.tick()
    assert store.get(run_id).status == "running"  # still full: kept for the next tick
    monkeypatch.setattr(dimalign.store, "_transaction", real)
    scheduler.tick()
    run = store.get(run_id)
    assert run.status == "done" and run.result["models"]["unlearned"]
    store.close()


def test_read_only_commands_work_on_a_full_disk(tmp_path, cli, cli_process, monkeypatch):
    import dimalign.store
    from dimalign.store import Store

    with small_disk(tmp_path / "disk", "2m") as disk:
        copied_home = tmp_path / "disk" / "home"
        path, ids = _store_with_runs(copied_home)
        store = Store(path)
        store.update(ids[0], status="done")
        store.close()
        if disk is not None:  # root: a real full disk, commands as processes of their own
            disk.fill()
            run = cli_process
        else:  # simulated: every write transaction finds the disk full
            real = dimalign.store._transaction
            monkeypatch.setattr(dimalign.store, "_transaction",
                                lambda db, p: real(_FullDb(), p))
            run = cli
        listed = run("runs", home=copied_home)
        assert listed.returncode == 0, listed.stderr
        assert all(i in listed.stdout for i in ids) and listed.stderr == ""
        watched = run("watch", ids[0], home=copied_home)
        assert watched.returncode == 0 and f"{ids[0]} done" in watched.stdout
        submitted = run("submit", "--no-start", "--set", "train.epochs=2", home=copied_home)
        assert submitted.returncode == 1 and submitted.stdout == ""
        one_line(submitted.stderr, f"disk full at {path}")
        if disk is not None:
            disk.free()


# ---- plugins
# A hostile plugin method (one that exits at import, prints, returns no loss tensors or imports
# slowly) costs its own warning or one error line naming it: never a dead command, a broken
# `--json`, or a `--help` that waits for it.

import re  # noqa: E402

HOSTILE_STEP = '''
import torch.nn.functional as F

from dimalign.methods.base import MethodSpec, Phase, common_knobs, register

print("hello from {name} at import")


def loss(ctx, phase, batch):
    print("hello from a step of {name}")
    return {returns}


register(MethodSpec("{name}", "{name}", "a hostile plugin", "none",
                    common_knobs(lr=0.01, epochs=1),
                    lambda ctx, epoch: [Phase("train", "retain", 2)], loss))
'''
A_LOSS = '{"ce": F.cross_entropy(ctx.model(batch.xr), batch.yr)}'


@pytest.fixture()
def load_plugin(tmp_path, monkeypatch):
    """`load(name, code)`: a plugin module loaded as its entry point would be; the registry and
    sys.modules are as before afterwards."""
    from importlib.metadata import EntryPoint

    from dimalign.methods import REGISTRY, _load_plugin

    monkeypatch.syspath_prepend(str(tmp_path))
    before, modules = dict(REGISTRY), []

    def load(name: str, code: str) -> None:
        modules.append(f"{name}_plugin")
        (tmp_path / f"{name}_plugin.py").write_text(code)
        _load_plugin(EntryPoint(name, f"{name}_plugin", "dimalign.methods"))

    yield load
    REGISTRY.clear()
    REGISTRY.update(before)
    for module in modules:
        sys.modules.pop(module, None)


def test_a_plugin_that_exits_at_import_is_skipped_and_ctrl_c_still_stops(load_plugin):
    from dimalign.methods import REGISTRY, PluginWarning

    before = dict(REGISTRY)
    with pytest.warns(PluginWarning, match=r"skipped plugin method 'quits' .*SystemExit: 3"):
        load_plugin("quits", "import sys\nsys.exit(3)\n")
    assert before == REGISTRY
    with pytest.raises(KeyboardInterrupt):
        load_plugin("stopped", "raise KeyboardInterrupt\n")


def test_what_a_plugin_prints_goes_to_stderr_and_json_stays_one_object(load_plugin,
                                                                        tiny_baselines, cli,
                                                                        capsys):
    load_plugin("chatty", HOSTILE_STEP.format(name="chatty", returns=A_LOSS))
    printed = capsys.readouterr()
    assert printed.out == "" and "hello from chatty at import" in printed.err
    ran = cli("run", "--set", "train.epochs=2", "--method", "chatty", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["method"] == "chatty"
    assert "hello from a step of chatty" in ran.stderr


@pytest.mark.parametrize("returns, what", [('"oops"', "str 'oops'"), ("1.5", "float 1.5")])
def test_a_plugin_step_returning_no_loss_tensors_fails_in_one_line_naming_it(
        returns, what, load_plugin, bare_store, tiny, cli):
    from dimalign.worker import work

    load_plugin("bad", HOSTILE_STEP.format(name="bad", returns=returns))
    line = (f"plugin method 'bad' step returned {what}; expected a dict of named scalar loss "
            "tensors, e.g. {'ce': loss}")
    ran = cli("run", "--set", "train.epochs=2", "--method", "bad", "--json")
    assert ran.returncode == 1 and ran.stdout == "" and "Traceback" not in ran.stderr
    assert said(ran.stderr)[-1] == f"dimalign: {line}"
    run_id = submit(bare_store, preset="digits-class", overrides=tiny, method="bad",
                    owner="plugin")
    assert work(str(paths.home()), run_id) is None
    job = bare_store.get(run_id)
    assert (job.status, job.error) == ("failed", line)


def install_plugins(site: Path, modules: dict[str, str]) -> dict[str, str]:
    """Plugin modules in `site`, with the entry points pip would record for them (a dist-info
    folder); returns an environment whose PYTHONPATH finds them."""
    info = site / "dimalign_hostile-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dimalign-hostile\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dimalign.methods]\n" + "".join(f"{name} = {name}_plugin\n" for name in modules))
    for name, code in modules.items():
        (site / f"{name}_plugin.py").write_text(code)
    root = Path(__file__).resolve().parent.parent
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site), str(root), os.environ.get("PYTHONPATH", "")]))


def test_only_commands_that_need_methods_wait_for_a_slow_plugin_and_it_is_named(tmp_path,
                                                                                cli_process):
    from dimalign.methods import BUILTIN

    imported = tmp_path / "slow-imported"
    env = install_plugins(tmp_path / "site", {
        "slow": f"import pathlib, time\npathlib.Path({str(imported)!r}).touch()\n"
                "time.sleep(2.5)\n",
        "quits": "import sys\nsys.exit(3)\n",
        "chatty": "print('hello from chatty at import')\n"})
    seconds = {}
    for command in (["--help"], ["runs"], ["methods", "--json"]):
        start = time.perf_counter()
        ran = cli_process(*command, env=env, timeout=120)
        seconds[command[0]] = time.perf_counter() - start
        assert ran.returncode == 0, ran.stderr
        assert imported.exists() == (command[0] == "methods"), command
    # the same start-up, but only `methods` sleeps in the plugin
    assert max(seconds["--help"], seconds["runs"]) < seconds["methods"] - 1.5, seconds
    assert list(json.loads(ran.stdout)) == list(BUILTIN)  # stdout: the one JSON object
    took = re.search(r"^dimalign: plugin method 'slow' took (\d+\.\d) s to import$", ran.stderr,
                     re.MULTILINE)
    assert took and float(took[1]) >= 2.5, ran.stderr
    assert "hello from chatty at import" in ran.stderr
    (quits,) = [line for line in said(ran.stderr) if "'quits'" in line]
    assert "PluginWarning" in quits and "SystemExit: 3" in quits


# ---- own data and models: nothing silently wrong
# A user's folder and checkpoint are read as they are or refused in one line (exit 2): links are
# walked once and never out of the folder unasked, every bit depth is scaled to 8 bits, a
# rewritten image is decoded again, weights must be finite and the model must fit the images.

import numpy as np  # noqa: E402

RAMP = np.linspace(0.0, 1.0, 16).reshape(4, 4)  # a 4x4 image from black to white
RAMP_8BIT = np.rint(RAMP * 255).astype(np.uint8)


def write_images(folder, count: int = 3, size: int = 8, seed: int = 0, ext: str = "png"):
    """`count` random 8-bit grayscale images `0.EXT`, `1.EXT`... in `folder` (made here)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.{ext}")


def own_run(root, *more: str) -> list[str]:
    """`dimalign run` on the two-class folder at `root` (what fails here fails before training)."""
    sets = ["dataset=imagefolder", f"dataset_root={root}", "image_size=8", "scenario.classes=1",
            "train.epochs=2", *more]
    return ["run", *[arg for s in sets for arg in ("--set", s)]]


def test_links_that_loop_count_each_image_once(tmp_path):
    from dimalign.datasets import scan_folder

    write_images(tmp_path / "a")
    write_images(tmp_path / "b", seed=1)
    (tmp_path / "a" / "up").symlink_to("..")
    (tmp_path / "b" / "self").symlink_to(".")
    (tmp_path / "a" / "again.png").symlink_to("0.png")
    scan = scan_folder(str(tmp_path))
    assert scan.files == ("a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png")
    assert scan.labels == (0, 0, 0, 1, 1, 1)


def test_an_image_reached_from_two_classes_is_refused_naming_both(tmp_path, cli):
    write_images(tmp_path / "a")
    write_images(tmp_path / "b", seed=1)
    (tmp_path / "a" / "theirs").symlink_to("../b")
    one_error_line(cli(*own_run(tmp_path)), 2, "b/0.png", "'a'", "'b'")


def test_a_link_out_of_the_folder_is_refused_unless_allowed(tmp_path, cli, monkeypatch):
    from dimalign.datasets import scan_folder

    root = tmp_path / "root"
    write_images(root / "a")
    write_images(root / "b", seed=1)
    write_images(tmp_path / "elsewhere", seed=2)
    (root / "b" / "out").symlink_to(tmp_path / "elsewhere")
    one_error_line(cli(*own_run(root)), 2, "b/out", "DIMALIGN_FOLLOW_OUTSIDE_LINKS=1")
    monkeypatch.setenv("DIMALIGN_FOLLOW_OUTSIDE_LINKS", "1")
    assert scan_folder(str(root)).files[-3:] == ("b/out/0.png", "b/out/1.png", "b/out/2.png")


def test_every_bit_depth_is_scaled_to_8_bits_not_clipped(tmp_path):
    from PIL import Image

    from dimalign.datasets import _decode, scan_folder

    wide = {"0-16bit.png": np.rint(RAMP * 65535).astype(np.uint16),
            "1-32bit.tif": np.rint(RAMP * (2**31 - 1)).astype(np.int32),
            # older Pillow opens 16-bit PNGs as 32-bit mode I
            "2-32bit-holding-16.tif": np.rint(RAMP * 65535).astype(np.int32),
            "3-float-0-to-1.tif": RAMP.astype(np.float32),
            "4-float-0-to-255.tif": (RAMP * 255).astype(np.float32),
            "5-float-any-range.tif": (RAMP * 1000 - 500).astype(np.float32)}
    (tmp_path / "a").mkdir()
    for name, pixels in wide.items():
        Image.fromarray(pixels).save(tmp_path / "a" / name)
    write_images(tmp_path / "b", size=4)
    scan = scan_folder(str(tmp_path))
    assert scan.channels == 1
    x, _ = _decode(scan, 4)  # (N, 1, 4, 4) in the scan's order
    for name, image in zip(wide, x, strict=False):
        assert np.abs(image[0].astype(int) - RAMP_8BIT).max() <= 1, (name, image[0])


def test_an_image_with_non_finite_pixels_is_refused_in_one_line(tmp_path, cli):
    from PIL import Image

    write_images(tmp_path / "a")
    write_images(tmp_path / "b", seed=1)
    nan = np.full((8, 8), np.nan, dtype=np.float32)
    Image.fromarray(nan).save(tmp_path / "a" / "9.tif")
    one_error_line(cli(*own_run(tmp_path)), 2, "9.tif", "not finite")


def test_an_image_rewritten_with_its_old_size_and_mtime_is_decoded_again(tmp_path):
    from PIL import Image

    from dimalign.datasets import _decode, scan_folder

    write_images(tmp_path / "a", ext="bmp")  # uncompressed: other pixels, the same size
    write_images(tmp_path / "b", ext="bmp", seed=1)
    before = _decode(scan_folder(str(tmp_path)), 8)[0]
    path = tmp_path / "a" / "0.bmp"
    st = path.stat()
    time.sleep(0.02)  # the change time has a clock tick of a few milliseconds
    Image.fromarray(255 - before[0, 0]).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after = _decode(scan_folder(str(tmp_path)), 8)[0]
    np.testing.assert_array_equal(after[0, 0], 255 - before[0, 0])


def test_a_chmod_or_a_copy_of_the_same_bytes_keeps_the_folders_fingerprint(tmp_path):
    """The fingerprint keys the cached baselines: only the bytes count, so a chmod, a restore
    from a backup or a Ray node's copy at the same path finds the same models."""
    import shutil

    from dimalign.datasets import scan_folder

    write_images(tmp_path / "a")
    write_images(tmp_path / "b", seed=1)
    first = scan_folder(str(tmp_path)).fingerprint
    for path in (tmp_path / "a").iterdir():
        path.chmod(0o600)  # a new change time: the file is read again, its bytes the same
    assert scan_folder(str(tmp_path)).fingerprint == first
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    shutil.rmtree(tmp_path / "a")
    (tmp_path / "copy").rename(tmp_path / "a")  # new inodes and times, the same bytes
    assert scan_folder(str(tmp_path)).fingerprint == first
    (tmp_path / "b" / "0.png").write_bytes((tmp_path / "b" / "1.png").read_bytes())
    assert scan_folder(str(tmp_path)).fingerprint != first  # other bytes: another experiment


def test_an_unreadable_image_exits_alike_found_by_the_scan_or_by_decoding(tmp_path, cli):
    write_images(tmp_path / "a")
    write_images(tmp_path / "b", seed=1)
    (tmp_path / "a" / "0.png").write_bytes(b"not an image")  # a class's first: the scan opens it
    scanned = one_error_line(cli(*own_run(tmp_path)), 2, "cannot read image", "0.png")
    write_images(tmp_path / "a")
    (tmp_path / "a" / "2.png").write_bytes(b"not an image")  # read when decoding only
    decoded = one_error_line(cli(*own_run(tmp_path)), 2, "cannot read image", "2.png")
    assert scanned.replace("0.png", "2.png") == decoded


def test_a_checkpoint_with_nan_weights_or_a_folder_is_refused_in_one_line(tmp_path, cli):
    from dimalign.models import build_model

    state = build_model("cnn", 1, 10, 8).state_dict()
    name = [k for k, v in state.items() if v.is_floating_point()][2]
    state[name].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    ran = cli("run", "--set", "train.epochs=2", "--set", f"original_checkpoint={tmp_path}/nan.pt")
    one_error_line(ran, 2, "nan.pt", name, "not finite")
    ran = cli("run", "--set", "train.epochs=2", "--set", f"original_checkpoint={tmp_path}")
    one_error_line(ran, 2, f"{str(tmp_path)!r} is a directory")


@pytest.mark.parametrize("model, needs", [("vit_b_16", "exactly 224x224"),
                                          ("vgg11", "at least 32x32")])
def test_a_model_that_does_not_fit_the_images_is_refused_naming_the_size(model, needs, cli):
    ran = cli("run", "--set", f"model=torchvision:{model}", "--set", "train.epochs=2")
    one_error_line(ran, 2, f"invalid setting model: torchvision:{model} needs images of {needs}",
                   "8x8")


def test_a_model_that_takes_a_range_of_sizes_names_the_range():
    from dimalign.models import input_size_problem

    for size in (8, 300):  # MaxViT's windows: 221..224 only, from below and from above
        assert input_size_problem("torchvision:maxvit_t", size) == \
            "needs images of 221x221 to 224x224"


# ---- CLI plumbing
# The console script's guard (dimalign/__main__.py) ends what happens outside `cli.main` in one
# line too: Ctrl-C while the command starts, a reader of stdout that left. Waiting on a run that
# Ctrl-C stops says the run goes on and how to stop it.


def dimalign_process(*args: str) -> subprocess.Popen:
    """`python -m dimalign ARGS` as a person's terminal starts it: Ctrl-C (SIGINT) reaches it
    even where this suite runs in the background, whose children inherit SIGINT ignored."""
    return subprocess.Popen([sys.executable, "-m", "dimalign", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("args", [("runs", "--owner", "nobody"), ("methods",), ("presets",)])
def test_a_reader_that_leaves_early_ends_the_command_quietly(args):
    proc = dimalign_process(*args)
    proc.stdout.close()  # `| head -0`: nobody reads what it prints
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == "", err  # 128 + SIGPIPE, as a shell says


def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130():
    proc = dimalign_process("runs")
    time.sleep(0.4)  # inside its imports (torch takes seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and said(err) == ["dimalign: interrupted"], err
    assert out == ""


def test_submit_wait_stopped_by_ctrl_c_names_the_run_that_goes_on(bare_store, tiny):
    proc = dimalign_process("submit", "--wait", "--set", *tiny, "--set", "muda.epochs=400",
                            "--owner", "waiter")
    line = proc.stderr.readline()
    while not line.startswith("run "):
        assert line, "submit ended before it named its run"
        line = proc.stderr.readline()
    run_id = line.split()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and out == "", err
    assert said(err)[-1] == (
        f"dimalign: stopped waiting; run {run_id} goes on in the background (dimalign watch "
        f"{run_id} follows it, dimalign cancel {run_id} stops it)")
    assert bare_store.get(run_id).status in ACTIVE


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_compare_and_sweep_refuse_too_many_replicates_alike(command, cli, tiny):
    for count, words in (("1001", "replicates 0..1000 pass the limit of 1000 (0..999)"),
                         ("0", "must be at least 1, got 0")):
        ran = cli(command, "--set", *tiny, "--replicates", count)
        one_error_line(ran, 2, "--replicates", words)
