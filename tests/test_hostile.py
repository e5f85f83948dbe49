"""Hostile conditions: every case ends in one clear line or a correct result, and nothing is
lost."""

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from dimalign import checked
from dimalign.train import cache_key, cache_path

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
def home(tmp_path, monkeypatch, tiny_cfg, tiny_baselines):
    """A home of its own holding a copy of the tiny baselines (damage stays in this test)."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    for role in ("original", "retrained"):
        pt = Path(cache_path(cache_key(tiny_cfg, role)))
        for source in (pt, checked.sidecar(pt), pt.with_suffix(".json"),
                       checked.sidecar(pt.with_suffix(".json"))):
            shutil.copy2(source, home / "models" / source.name)
    monkeypatch.setenv("DIMALIGN_HOME", str(home))
    return home


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
    weight = next(t for t in tensors(torch.load(path, weights_only=True))
                  if t.dtype == torch.float32 and t.numel() > 16)
    at = data.find(weight.numpy().tobytes())
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    after = list(tensors(torch.load(path, weights_only=True)))  # still loads
    assert not any(a.shape == weight.shape and torch.equal(a, weight) for a in after)


DAMAGE = {"truncated": truncate, "garbage": garbage, "byte-flipped": flip_a_weight}


def _store_with_runs(home: Path) -> tuple[Path, list[str]]:
    from dimalign.store import Store

    store = Store(home / "runs.sqlite")
    ids = [store.create_run(owner="ann", kind="unlearn", preset="digits-class", method="muda",
                            config={"n": i}) for i in range(40)]
    for run_id in ids:
        store.log_metrics(run_id, 0, {"acc": 0.5})
        (home / "runs" / run_id).mkdir(parents=True)
        (home / "runs" / run_id / "result.json").write_text("{}")
    store.close()
    return home / "runs.sqlite", ids


STORE_DAMAGE = {"garbage": garbage, "truncated": truncate,
                "zero-length": lambda path: path.write_bytes(b"")}


@pytest.mark.parametrize("kind", list(STORE_DAMAGE))
def test_a_damaged_store_is_named_left_alone_and_every_command_exits_2(kind, tmp_path, cli,
                                                                         cli_process):
    home = tmp_path / "home"
    path, ids = _store_with_runs(home)
    STORE_DAMAGE[kind](path)
    before = path.read_bytes()
    commands = [("runs",), ("runs", "--json"), ("watch", ids[0]), ("cancel", ids[0]),
                ("resume", ids[0]), ("export", ids[0], str(tmp_path / "out")),
                ("submit", "--no-start", "--set", "train.epochs=2"),
                ("sweep", "--grid", "muda.lambda_da=1,2", "--set", "train.epochs=2"),
                ("scheduler", "--idle-exit", "1")]
    for args in commands:
        ran = cli(*args, home=home)
        assert ran.returncode == 2, (args, ran.stderr)
        line = one_line(ran.stderr, str(path), "damaged")
        assert f"mv {path} {path}.bak" in line and "run folders" in line, line
        assert ran.stdout == ""
    ran = cli_process("runs", home=home)  # the real streams of a process of its own
    assert ran.returncode == 2 and ran.stdout == ""
    one_line(ran.stderr, str(path), "damaged")
    assert path.read_bytes() == before  # never overwritten, never "repaired"
    assert sorted(p.name for p in (home / "runs").iterdir()) == sorted(ids)

    # what the message says to do works, and keeps the run folders
    os.replace(path, f"{path}.bak")
    ran = cli("runs", home=home)
    assert ran.returncode == 0 and ran.stdout.count("\n") == 1  # a new, empty store
    assert sorted(p.name for p in (home / "runs").iterdir()) == sorted(ids)
    assert Path(f"{path}.bak").read_bytes() == before


def test_a_page_shows_a_damaged_store_as_a_message_not_an_exception(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    home = tmp_path / "home"
    path, _ = _store_with_runs(home)
    garbage(path)
    monkeypatch.setenv("DIMALIGN_HOME", str(home))
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
def test_a_damaged_cached_model_is_set_aside_and_trained_again(kind, home, tiny_cfg, cli):
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


def test_a_model_cached_before_checksums_is_adopted_when_it_loads(home, tiny_cfg):
    from dimalign.train import get_baselines

    original = model_file(tiny_cfg, "original")
    checked.sidecar(original).unlink()
    said = []
    b = get_baselines(tiny_cfg, say=said.append)
    assert said == [] and b.cached == {"original": True, "retrained": True}
    assert checked.verify(original)  # its sidecar was written on the way


@pytest.mark.parametrize("name", ["geometry.pt", "unlearned.pt"])
def test_a_damaged_file_of_a_saved_result_is_set_aside_and_the_result_computed_again(
        name, home, cli):
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
def done_run(home, tiny, monkeypatch):
    """A MUDA run finished by the worker's own function, in this process."""
    from dimalign.jobs import submit
    from dimalign.store import Store
    from dimalign.worker import work

    store = Store()
    run_id = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=2"],
                    owner="ann")
    assert work(str(home), run_id) is None
    assert store.get(run_id).status == "done", store.get(run_id).error
    yield store, run_id
    store.close()


def test_a_damaged_parent_fails_its_fork_with_one_line_and_export_leaves_it_out(
        done_run, home, cli, tmp_path):
    from dimalign.jobs import submit
    from dimalign.worker import work

    store, parent = done_run
    weights = store.get(parent).folder / "unlearned.pt"
    flip_a_weight(weights)
    fork = submit(store, preset="digits-class", overrides=["muda.lambda_da=1"], owner="ann",
                  parent_id=parent)
    assert work(str(home), fork) is None
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
        kind, done_run, home, capsys):
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
    assert work(str(home), run_id) is None
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


def test_run_on_a_full_disk_fails_with_one_line_and_leaves_no_temp_files(home, cli,
                                                                          monkeypatch):
    before = set((home / "runs").iterdir()) if (home / "runs").exists() else set()
    monkeypatch.setattr(os, "fsync", enospc)  # every checked file's write ends here
    ran = cli("run", "--set", "train.epochs=2", "--method", "ga", "--fresh")
    assert ran.returncode == 1
    line = one_line(ran.stderr, "disk full at")
    assert line.startswith(f"dimalign: disk full at {home / 'runs'}"), line
    assert line == ran.stderr.strip().splitlines()[-1]
    assert leftovers(home) == []
    assert set((home / "runs").iterdir()) == before  # no half-written result


def test_a_worker_job_on_a_full_disk_fails_naming_the_file_and_the_scheduler_goes_on(
        home, tiny, drain, monkeypatch):
    from dimalign.jobs import Scheduler, Slot, submit
    from dimalign.store import Store
    from dimalign.worker import work

    store = Store()
    overrides = tiny + ["muda.epochs=2"]
    with small_disk(home / "runs", "4m") as disk:
        run_id = submit(store, preset="digits-class", overrides=overrides, owner="ann")
        scheduler = Scheduler(store, slots=[Slot(None)])
        try:
            if disk is not None:  # root: the runs folder really is full; a real worker
                disk.fill()
                drain(scheduler, lambda: store.get(run_id).terminal, timeout=180)
            else:  # simulated in this process, through the worker's own function
                with monkeypatch.context() as patch:
                    patch.setattr(os, "fsync", enospc)
                    assert work(str(home), run_id) is None
            run = store.get(run_id)
            assert run.status == "failed"
            assert run.error.startswith(f"disk full at {home / 'runs' / run_id}"), run.error
            assert "\n" not in run.error and leftovers(home) == []
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
        home, tiny, capsys, monkeypatch):
    import dimalign.store
    from dimalign.jobs import Scheduler, submit
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


def test_a_worker_that_cannot_record_its_ending_hands_it_to_the_scheduler(home, tiny,
                                                                          monkeypatch):
    import dimalign.store
    from dimalign.jobs import Scheduler, Slot, submit
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
    ending = work(str(home), run_id)
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
        home = tmp_path / "disk" / "home"
        path, ids = _store_with_runs(home)
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
        listed = run("runs", home=home)
        assert listed.returncode == 0, listed.stderr
        assert all(i in listed.stdout for i in ids) and listed.stderr == ""
        watched = run("watch", ids[0], home=home)
        assert watched.returncode == 0 and f"{ids[0]} done" in watched.stdout
        submitted = run("submit", "--no-start", "--set", "train.epochs=2", home=home)
        assert submitted.returncode == 1 and submitted.stdout == ""
        one_line(submitted.stderr, f"disk full at {path}")
        if disk is not None:
            disk.free()
