"""Click to "done" on Unlearn (live), for a person's first and second run, through `make app`.

Each round is a new person (a new owner, a new browser context) on Unlearn (live): press Run,
wait until the page says "Run <id> done."; move λ_DA one step and press Run again, wait for the
second run's "done". Beside each, the baseline from the same session: the worker's own time for
that run from the store (started → finished). Also: store done → done on screen (the store's
`finished` against the browser's clock on this machine), and click → the whole page redrawn for
the finished run (the picker names it done, its result table is drawn).

    .venv/bin/python -m bench click_done [--rounds 5]

Starts the app exactly as the README does (`make app PORT=<free port>`) in a throw-away
DIMALIGN_HOME whose digits-class baselines were trained before. Needs Chromium
(tests/find_browser.py, run as a program, finds it or installs one).
"""

from __future__ import annotations

import time

from bench import workshop
from bench.common import median, parser

TIMEOUT = 120.0  # seconds one answer may take before the bench stops

# the id of a run the page says is done, other than the ones in `seen`; polled every frame
DONE_LINE = """(seen) => {
    for (const e of document.querySelectorAll("[data-testid='stAlertContentSuccess']")) {
        const m = /Run ([0-9a-f]{12}) done\\./.exec(e.innerText);
        if (m && !seen.includes(m[1])) return m[1];
    }
    return null;
}"""

# the whole page redrawn for `id`: the picker names it done and its result table is there
REDRAWN = """(id) => {
    const picker = document.querySelector("[data-testid='stSelectbox'] input[aria-label='Run']");
    const label = picker ? (picker.value || '') : '';
    return label.startsWith(id + ' · ') && label.includes(' · done')
        && document.querySelectorAll("[data-testid='stDataFrame']").length > 0;
}"""


def press_and_wait(page, seen: list[str]) -> tuple[str, float, float, float]:
    """Press Run; (run id, click → done line, click → page redrawn, click wall time)."""
    clicked, start = time.time(), time.perf_counter()
    page.get_by_role("button", name="Run", exact=True).click()
    handle = page.wait_for_function(DONE_LINE, arg=seen, polling="raf",
                                    timeout=TIMEOUT * 1000)
    line = time.perf_counter() - start
    run_id = handle.json_value()
    page.wait_for_function(REDRAWN, arg=run_id, polling="raf", timeout=TIMEOUT * 1000)
    return run_id, line, time.perf_counter() - start, clicked


def step_lambda(page) -> None:
    thumb = page.get_by_role("slider", name="lambda_da")
    thumb.focus()
    thumb.press("ArrowRight")
    workshop.wait_idle(page)


def main(argv: list[str] | None = None) -> int:
    args = parser(__name__, rounds=5).parse_args(argv)
    from dimalign.store import Store

    rows = {"first": [], "second": []}
    with workshop.app_in_browser(
            "click to done on screen: Unlearn (live), a first and a second run, make app",
            {"rounds": args.rounds}, workshop.train_baselines) as (url, browser):
        for i in range(args.rounds + 1):  # round 0 warms the server, not reported
            page = workshop.open_page(browser, url, f"done-{i}")
            seen: list[str] = []
            for which in ("first", "second"):
                if which == "second":
                    step_lambda(page)  # new knobs: nothing comes from a cache
                run_id, line, full, clicked = press_and_wait(page, seen)
                seen.append(run_id)
                run = Store().get(run_id)
                worker = run.finished - run.started
                behind = clicked + line - run.finished
                print(f"round {i} {which}: run {run_id} click → done {line:.2f} s, page "
                      f"redrawn {full:.2f} s; worker {worker:.2f} s; store done → screen "
                      f"{behind:.2f} s; click → queued {run.created - clicked:.2f}, queued "
                      f"{run.started - run.created:.2f}")
                if i:
                    rows[which].append((line, full, worker, behind))
            page.context.close()
    print()
    for which, got in rows.items():
        line, full, worker, behind = (median([r[k] for r in got]) for k in range(4))
        print(f"{which} run: click → done median {line:.2f} s (min {min(r[0] for r in got):.2f}, "
              f"max {max(r[0] for r in got):.2f}); baseline, worker: median {worker:.2f} s; the "
              f"app adds {line - worker:.2f} s; store done → screen median {behind:.2f} s (max "
              f"{max(r[3] for r in got):.2f}); page redrawn median {full:.2f} s")
    return 0
