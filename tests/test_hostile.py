"""Hostile and unlucky use: what a shared workshop server meets, each section one part of it.
Every test here is cheap: no training (runs are written into a throw-away store directly)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TINY = ["train.epochs=2"]

# ---- web app and owners
# Owner keys (dimalign/store.py owners table, dimalign/ui/state.py owner()): the first use of
# a name claims it with a key; the address carries both; a visitor without the key is a fresh
# guest with a notice. The engine (jobs.cancel / submit(parent_id=...)) checks the key too.

import base64  # noqa: E402
import shutil  # noqa: E402
import tomllib  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

from dimalign.store import (  # noqa: E402
    RESERVED_OWNERS,
    SCHEMA_VERSION,
    OwnerRefused,
    Store,
    StoreError,
    new_owner_key,
)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A throw-away DIMALIGN_HOME with its store; no scheduler is started from pages."""
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    monkeypatch.delenv("DIMALIGN_ADMIN_KEY", raising=False)
    monkeypatch.setattr("dimalign.jobs.ensure_scheduler", lambda: None)
    store = Store()
    yield store
    store.close()


def add_run(store: Store, owner: str, status: str = "running") -> str:
    """An unlearning run of digits-class (TINY) in `status`, as a worker would have left it."""
    from dimalign.config import build_config
    from dimalign.train import experiment_key

    cfg = build_config("digits-class", TINY)
    run_id = store.create_run(owner=owner, kind="unlearn", preset="digits-class",
                              method="muda", config=cfg.to_dict(),
                              experiment=experiment_key(cfg))
    store.update(run_id, status=status)
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
    assert SCHEMA_VERSION == 3
    with sqlite3.connect(path) as db:
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
    assert not [s for s in at.selectbox if s.key == "run"]  # none of alice's runs listed
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
    picker = at.selectbox(key="run")
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


def test_a_damaged_geometry_file_is_one_readable_error_line(home):
    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        assert tomllib.load(fh)["client"]["showErrorDetails"] is False  # never a traceback
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
