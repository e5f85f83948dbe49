"""Click to answer on Audit and Tune, whose answer is a background job, through `make app`.

Click to answer on the two pages whose answer is a background job: *Audit* (press "Compute the
audit" → all four panels drawn) and *Tune* (press "Sweep" → the sweep's chart and its "Best
setting" line). Per round, beside it, the baseline from the same session: the worker's own time
for that work, read from the run store (the audit job's running time; for a sweep, the span from
its first run's start to its last run's end). What is left is what the app adds: queueing,
polling and drawing.

    .venv/bin/python -m bench click_result [--rounds 5]

Starts the app exactly as the README does (`make app PORT=<free port>`) in a throw-away
DIMALIGN_HOME whose digits-class baselines of replicates 0 and 1 were trained before, then makes
one MUDA run by pressing Run on Unlearn (live), as a user would. Each round asks for new work
(another relearn step count; other knob values), so nothing comes from a cache. Needs Chromium
(tests/find_browser.py, run as a program, finds it or installs one).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench import workshop
from bench.common import median, parser

OWNER = "bench"
TIMEOUT = 300.0  # seconds one answer may take before the round counts as failed


def train(env: dict, *sets: str) -> None:
    python = workshop.PYTHON if workshop.PYTHON.exists() else sys.executable
    args = ["run", "--preset", workshop.PRESET, *sum((["--set", s] for s in sets), [])]
    done = subprocess.run([str(python), "-m", "dimalign", *args], cwd=workshop.ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training the baselines failed:\n{done.stderr[-2000:]}")


def until(page, done, timeout: float = TIMEOUT) -> float:
    """Seconds until `done(page)` holds and Streamlit's running indicator is gone."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if done(page) and not page.locator("[data-testid='stStatusWidget']").count():
            return time.perf_counter() - start
        if page.locator("[data-testid='stException']").count():
            raise SystemExit("the page showed an exception:\n"
                             + page.locator("[data-testid='stException']").first.inner_text())
        time.sleep(0.05)
    raise SystemExit(f"no answer within {timeout:.0f} s")


def audit_drawn(page) -> bool:
    return (page.get_by_text("4. What does each class get?").count() > 0
            and page.locator(".js-plotly-plot").count() >= 4)


def tune_drawn(page, new: set[str]) -> bool:
    """The chart and a best setting naming one of this sweep's runs (not the last sweep's,
    which stays on screen until the click's rerun arrives)."""
    best = page.get_by_text("Best setting:")
    return (bool(new) and best.count() > 0 and page.locator(".js-plotly-plot").count() >= 1
            and any(run in best.first.inner_text() for run in new))


def set_field(page, label: str, value: str) -> None:
    field = page.locator(f"input[aria-label^='{label}']").first  # not the label's help button
    field.fill(value)
    field.press("Enter")
    workshop.wait_idle(page)


def audit_round(page, steps: int) -> tuple[float, float, str]:
    """Click → the audit drawn, the audit job's own running time, and where the rest went."""
    from dimalign.store import Store

    set_field(page, "Relearn steps s", str(steps))
    button = page.get_by_role("button", name="Compute the audit")
    button.wait_for(timeout=60_000)
    start, clicked = time.perf_counter(), time.time()
    button.click()
    page.get_by_text("1. Where in the network").first.wait_for(timeout=TIMEOUT * 1000)
    seconds = time.perf_counter() - start + until(page, audit_drawn)
    job = max(Store().runs(kind="audit", owner=OWNER), key=lambda r: r.created)
    parts = (f"click→queued {job.created - clicked:.2f}, queued {job.started - job.created:.2f},"
             f" job done→drawn {clicked + seconds - job.finished:.2f}")
    if job.status != "done":
        raise SystemExit(f"audit job {job.id} ended {job.status}: {job.error}")
    return seconds, job.finished - job.started, parts


def tune_round(page, values: str) -> tuple[float, float, int]:
    """Click → the sweep's chart and best setting, the workers' span, and the run count."""
    from dimalign.store import Store

    set_field(page, "lambda_da: values", values)
    before = {r.id for r in Store().runs(owner=OWNER, kind="unlearn")}
    page.get_by_role("button", name="Sweep", exact=True).click()

    def new_runs() -> set[str]:
        return {r.id for r in Store().runs(owner=OWNER, kind="unlearn")} - before

    seconds = until(page, lambda p: tune_drawn(p, new_runs()))
    runs = [Store().get(i) for i in new_runs()]
    if not runs or any(r.status != "done" for r in runs):
        raise SystemExit(f"sweep runs not all done: {[(r.id, r.status) for r in runs]}")
    span = max(r.finished for r in runs) - min(r.started for r in runs)
    return seconds, span, len(runs)


def main(argv: list[str] | None = None) -> int:
    args = parser(__name__, rounds=5).parse_args(argv)

    def prepare(env: dict) -> None:
        train(env)
        train(env, "replicate=1")  # Tune's default of 2 replicates finds both warm

    audit, tune = [], []
    with workshop.app_in_browser("click to answer: Audit and Tune through make app",
                                 {"rounds": args.rounds}, prepare) as (url, browser):
        page = workshop.open_page(browser, url, OWNER)  # Unlearn (live)
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("done.").first.wait_for(timeout=TIMEOUT * 1000)
        page.get_by_role("link", name="Audit", exact=True).click()
        page.get_by_role("button", name="Compute the audit").wait_for(timeout=60_000)
        workshop.wait_idle(page)
        for i in range(args.rounds + 1):  # round 0 warms the page, not reported
            seconds, worker, parts = audit_round(page, 40 + i)
            print(f"audit round {i}: click → drawn {seconds:.2f} s, job {worker:.2f} s"
                  f" ({parts})")
            if i:
                audit.append((seconds, worker))
        page.get_by_role("link", name="Tune", exact=True).click()
        page.get_by_role("button", name="Sweep", exact=True).wait_for(timeout=60_000)
        workshop.wait_idle(page)
        for i in range(args.rounds + 1):
            values = ", ".join(f"{v * (1 + i / 10):g}" for v in (0.5, 5.0, 50.0))
            seconds, span, n = tune_round(page, values)
            print(f"tune round {i}: {n} runs, click → drawn {seconds:.2f} s, "
                  f"workers {span:.2f} s")
            if i:
                tune.append((seconds, span))
    for label, rows, work in (("Audit (m auto, s 41..)", audit, "audit job"),
                              ("Tune (MUDA lambda_da x 3, 2 replicates)", tune,
                               "workers' span")):
        answer, base = median([r[0] for r in rows]), median([r[1] for r in rows])
        print(f"\n{label}: click → answer median {answer:.2f} s (max "
              f"{max(r[0] for r in rows):.2f}); baseline, {work}: median {base:.2f} s; "
              f"the app adds {answer - base:.2f} s ({answer / base:.2f}x)")
    return 0
