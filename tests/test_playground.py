"""The Learn page's DA playground computes in the browser (dimalign/ui/linked/playground.js):
its math, run in node, gives geometry.py's numbers on the same clouds. Where this machine has
no node, the same script runs in the Chromium the browser tests use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dimalign.geometry import dimensional_alignment, principal_angles, top_basis

SCRIPT = Path(__file__).resolve().parents[1] / "dimalign" / "ui" / "linked" / "playground.js"

# the cases' clouds as the page draws them (seeded, turned, spread), plus Python's own clouds
# off the origin (the Gram matrix is uncentred) handed to the same functions
JS = """(P, cases, given) => {
  const out = [];
  for (const c of cases) {
    const pts = P.arrange(P.clouds(c.seed), c.dim, c);
    out.push({points: pts, ...P.measure(pts.forget, pts.retain, c.dim, c.k)});
  }
  for (const g of given) out.push({points: g, ...P.measure(g.forget, g.retain, g.dim, g.k)});
  return out;
}"""

CASES = [dict(seed=28, dim=d, rotate=r, tilt=t, spread=s, k=k)
         for d, r, t, s in ((2, 60, 0, 0.3), (2, -80, 0, 1.2), (3, 35, 40, 0.2), (3, -10, -70, 0.9))
         for k in range(1, d + 1)]


def given_clouds() -> list[dict]:
    rng = np.random.default_rng(5)
    out = []
    for dim, k in ((2, 1), (3, 1), (3, 2)):
        retain = rng.normal(size=(50, dim)) * [4, 1, 0.5][:dim] + 1.5
        forget = rng.normal(size=(20, dim)) @ rng.normal(size=(dim, dim)) - 0.7
        out.append({"dim": dim, "k": k, "retain": retain.tolist(), "forget": forget.tolist()})
    return out


def run_js(cases: list[dict], given: list[dict]) -> list[dict]:
    if shutil.which("node"):
        code = (f"const P = require({json.dumps(str(SCRIPT))});"
                "const [c, g] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
                f"process.stdout.write(JSON.stringify(({JS})(P, c, g)));")
        done = subprocess.run(["node", "-e", code], input=json.dumps([cases, given]),
                              capture_output=True, text=True, timeout=60, check=True)
        return json.loads(done.stdout)
    return run_in_chromium(cases, given)


def run_in_chromium(cases: list[dict], given: list[dict]) -> list[dict]:
    from find_browser import MISSING, find
    from playwright.sync_api import sync_playwright

    chromium = find()
    assert chromium, MISSING
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.add_script_tag(content=SCRIPT.read_text())
        out = page.evaluate(f"([c, g]) => ({JS})(PLAYGROUND, c, g)", [cases, given])
        browser.close()
    return out


@pytest.fixture(scope="module")
def measured() -> list[dict]:
    given = given_clouds()
    return list(zip([*CASES, *given], run_js(CASES, given), strict=True))


def projector(vectors) -> np.ndarray:
    u = np.asarray(vectors, dtype=float).reshape(len(vectors), -1).T  # (dim, k) columns
    return u @ u.T  # sign-free: eigenvectors are defined up to sign


def test_the_browsers_da_angles_and_eigenvectors_are_geometrys(measured):
    for case, js in measured:
        forget = torch.tensor(js["points"]["forget"], dtype=torch.float64)
        retain = torch.tensor(js["points"]["retain"], dtype=torch.float64)
        k = case["k"]
        da = dimensional_alignment(forget, retain, k=k).value.item()
        assert js["da"] == pytest.approx(da, abs=1e-6), case
        angles = principal_angles(forget, retain, k, k).tolist()
        assert js["angles"] == pytest.approx(angles, abs=1e-6), case
        basis = top_basis(retain, k=k)
        np.testing.assert_allclose(projector(js["retain"]["vectors"]),
                                   projector(basis.vectors.T.tolist()), atol=1e-6)
        np.testing.assert_allclose(js["retain"]["values"], basis.eigenvalues.tolist(),
                                   rtol=1e-9)


def test_the_playground_moves_da_the_way_the_method_says(measured):
    """DA falls as the forget cloud turns away from the retain cloud's axis (25°) to square
    with it, and rises again as it spreads onto that axis; a full k is DA 1."""
    full = [js["da"] for c, js in measured if c.get("seed") and c["k"] == c["dim"]]
    assert full == pytest.approx([1.0] * len(full))
    turns = [dict(CASES[0], rotate=r) for r in (25, 45, 65, 85, -65)]
    spreads = [dict(CASES[0], rotate=-65, spread=s) for s in (0.3, 0.6, 1.2)]
    da = [js["da"] for js in run_js(turns + spreads, [])]
    assert da[:5] == sorted(da[:5], reverse=True) and da[0] > 0.99 and da[4] < 0.2, da
    assert da[5:] == sorted(da[5:]), da
