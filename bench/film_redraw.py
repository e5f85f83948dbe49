"""Film frame redraw on Unlearn (live): scrub → frame drawn, 750 points, through `make app`.

One MUDA run of digits-class with the film on (its default). The film samples at most 300
forget, 300 retain (of the rows MUDA may use: retain_fraction 0.3) and 150 test points; digit 3
alone gives 128 + 300 + 150 = 578. To draw 750, the page forgets digits 3, 5 and 8 (376 forget
samples) and moves MUDA's retain_fraction to 0.35 (307 of 877 retain rows; at 0.3, 264: 714
points). No setting of the digits scenarios gets 750 with retain_fraction 0.3: 300 forget
samples leave under 1,000 retain rows. In the film's frame, each round presses
ArrowRight on the step slider (a new frame) and reads `window.__filmRedrawMs` (scrub input →
plotly_afterplot, the page's own clock) and, from Python, the wall time until the step label
shows the new frame. Also says whether plotly drew with WebGL (scattergl) or SVG.

    .venv/bin/python -m bench film_redraw [--rounds 5]

Starts the app as the README does (`make app PORT=<free port>`) in a throw-away DIMALIGN_HOME
whose baselines for these settings were trained before. Needs Chromium (tests/find_browser.py,
run as a program, finds it or installs one).
"""

from __future__ import annotations

import subprocess
import time

from bench import workshop
from bench.click_done import DONE_LINE, REDRAWN
from bench.common import ROOT, median, parser

CLASSES = "3,5,8"
OVERRIDE = f"scenario.classes={CLASSES}"
RETAIN_FRACTION = 0.35  # MUDA's default 0.3, in 0.01 steps of its slider: 5 presses
LINKED = "iframe[src*='dimalign.ui.linked']"  # the film's component (dimalign/ui/linked.py)
TIMEOUT = 300_000  # ms: the run (baselines warm) and every wait on the page

# points per split (traces 3-5 of linked.js's film: forget, retain, test), the trace type and
# the WebGL renderer (software GL under --disable-gpu), from the film's frame
FILM_FACTS = """() => {
    const gd = document.getElementById('film-points'), out = {points: {}};
    for (const t of gd._fullData.slice(3, 6)) out.points[t.name] = (t.x || []).length;
    out.type = gd._fullData[3].type;
    const gl = document.createElement('canvas').getContext('webgl');
    const info = gl && gl.getExtension('WEBGL_debug_renderer_info');
    out.gl = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : (gl ? 'webgl' : 'none');
    out.frames = Number(document.getElementById('film-scrub').max) + 1;
    return out;
}"""
STEP = "() => document.getElementById('film-step').dataset.step"
MOVED = "(s) => document.getElementById('film-step').dataset.step !== s"  # label: a new frame


def train_baselines(env: dict) -> None:
    """These settings' baselines trained once: the run on the page finds them warm."""
    done = subprocess.run([str(workshop.PYTHON), "-m", "dimalign", "run", "--preset",
                           workshop.PRESET, "--set", OVERRIDE], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training the baselines failed:\n{done.stderr[-2000:]}")


def forget_three_digits(page) -> None:
    """On Experiment, as a person: add digits 5 and 8 to the classes to forget (the session's
    settings, which Unlearn then runs with)."""
    from playwright.sync_api import TimeoutError as Timeout

    page.get_by_text("Scenario and seed", exact=True).click()
    box = page.locator("[data-testid='stMultiSelect']").filter(has_text="Classes to forget")
    for digit in CLASSES.split(",")[1:]:
        for attempt in range(5):  # a redraw may close the list before the click (as tests' pick)
            workshop.wait_idle(page)
            box.click()
            try:
                page.get_by_role("option", name=digit, exact=True).click(timeout=5_000)
                break
            except Timeout:
                if attempt == 4:
                    raise
        page.keyboard.press("Escape")
        workshop.wait_idle(page)
    page.get_by_text(f"forget classes {CLASSES.replace(',', ', ')}").wait_for(timeout=30_000)


def more_retain_rows(page) -> None:
    """On Unlearn, as a person: MUDA's retain_fraction slider up to RETAIN_FRACTION."""
    page.get_by_text("Optimiser", exact=True).click()
    thumb = page.get_by_role("slider", name="retain_fraction")
    thumb.focus()
    for _ in range(round((RETAIN_FRACTION - 0.3) / 0.01)):
        thumb.press("ArrowRight")
    workshop.wait_idle(page)


def main(argv: list[str] | None = None) -> int:
    args = parser(__name__, rounds=5).parse_args(argv)
    with workshop.app_in_browser(
            "film frame redraw on Unlearn (live): scrub → frame drawn, make app",
            {"rounds": args.rounds, "method": "muda", "overrides": OVERRIDE,
             "muda.retain_fraction": RETAIN_FRACTION},
            train_baselines) as (url, browser):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(f"{url}/experiment?owner=filmer&preset={workshop.PRESET}")
        page.get_by_text("Scenario and seed", exact=True).wait_for(timeout=TIMEOUT)
        workshop.wait_idle(page)
        forget_three_digits(page)
        page.get_by_role("link", name="Unlearn (live)", exact=True).click()  # same session
        page.get_by_role("button", name="Run", exact=True).wait_for(timeout=TIMEOUT)
        workshop.wait_idle(page)
        more_retain_rows(page)
        start = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).click()
        run_id = page.wait_for_function(DONE_LINE, arg=[], polling="raf",
                                        timeout=TIMEOUT).json_value()
        page.wait_for_function(REDRAWN, arg=run_id, polling="raf", timeout=TIMEOUT)
        workshop.wait_idle(page)
        from dimalign.store import Store

        ran = Store().get(run_id).config  # what the page ran, not what it was told
        settings = (list(ran["scenario"]["classes"]), ran.get("muda", {}).get("retain_fraction"))
        if settings != ([3, 5, 8], RETAIN_FRACTION):
            raise SystemExit(f"the run's classes and retain_fraction are {settings}")
        print(f"run {run_id} (muda, {OVERRIDE}, retain_fraction={RETAIN_FRACTION}) done and "
              f"drawn {time.perf_counter() - start:.1f} s after Run")
        frame = page.locator(LINKED).first
        frame.wait_for(timeout=TIMEOUT)
        film = frame.element_handle().content_frame()
        film.locator("#film-step:not([data-step=''])").wait_for(timeout=TIMEOUT)
        facts = film.evaluate(FILM_FACTS)
        drawn = "WebGL" if facts["type"] == "scattergl" else "SVG"
        print(f"points per frame: {sum(facts['points'].values())} ("
              + ", ".join(f"{k} {v}" for k, v in facts["points"].items())
              + f"); frames: {facts['frames']}; drawn with {drawn} ({facts['type']}; GL "
              f"renderer: {facts['gl']})")
        if facts["frames"] < args.rounds + 2:
            raise SystemExit(f"the film has {facts['frames']} frames: too few for "
                             f"{args.rounds} rounds and a warm-up")
        scrub, rows = film.locator("#film-scrub"), []
        scrub.focus()
        scrub.press("Home")
        workshop.wait_idle(page)  # the slider's change reruns the page: not inside a round
        for i in range(args.rounds + 1):  # round 0 warms up, not reported
            before = film.evaluate(STEP)
            film.evaluate("() => { window.__filmRedrawMs = undefined; }")
            scrub.focus()
            t0 = time.perf_counter()
            scrub.press("ArrowRight")
            film.wait_for_function(MOVED, arg=before, polling="raf", timeout=10_000)
            wall = (time.perf_counter() - t0) * 1000
            film.wait_for_function("() => window.__filmRedrawMs !== undefined",
                                   timeout=10_000)
            redraw = film.evaluate("() => window.__filmRedrawMs")
            print(f"round {i}{' (warm-up)' if not i else ''}: frame {scrub.input_value()} "
                  f"(step {film.evaluate(STEP)}): redraw {redraw:.1f} ms, scrub → step label "
                  f"(Python wall) {wall:.1f} ms")
            if i:
                rows.append((redraw, wall))
            workshop.wait_idle(page)
        context.close()
    redraws, walls = sorted(r[0] for r in rows), sorted(r[1] for r in rows)
    print(f"\nfilm redraw (scrub input → plotly_afterplot), {len(rows)} scrubs, "
          f"{sum(facts['points'].values())} points, {drawn}: median {median(redraws):.1f} ms "
          f"(range {redraws[0]:.1f} .. {redraws[-1]:.1f})")
    print(f"scrub → step label changed, Python wall (Playwright key press and polling "
          f"included): median {median(walls):.1f} ms (range {walls[0]:.1f} .. {walls[-1]:.1f})")
    return 0
