"""The Learn page's exercises: goals a person reaches with their own runs, each checked on a
finished run's result. Pure: a run's method, knobs and metrics in, a verdict out (the page
reads the runs, `ui.runs.own_attempts`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

RETAIN_LOSS = 0.01  # "without losing more than 1 point of retain accuracy"
CLOSE = 0.02  # "within 2 points of the retrained model"


@dataclass(frozen=True)
class Attempt:
    """One finished unlearning run as the exercises see it."""

    run_id: str
    method: str
    knobs: dict  # the method's knobs, defaults filled in
    models: dict  # role ("original", "retrained", "unlearned") -> its metrics

    def metric(self, role: str, key: str) -> float | None:
        """A metric of one model; None when missing or undefined (NaN is saved as null)."""
        value = self.models.get(role, {}).get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return None if math.isnan(value) else float(value)


def attempt(run_id: str, method: str, knobs: dict, result: dict | None) -> Attempt | None:
    """A finished run's Attempt; None for a result without the three models (a job that is
    not an unlearning run, or a damaged result)."""
    models = (result or {}).get("models") or {}
    if not {"original", "retrained", "unlearned"} <= set(models):
        return None
    return Attempt(run_id, method, dict(knobs), models)


def no_da_term(a: Attempt) -> bool:
    """A MUDA run with λ_DA = 0: forgetting left to the recover phase alone."""
    return a.method == "muda" and a.knobs.get("lambda_da") == 0


def aligned_beyond_retraining(a: Attempt) -> bool:
    """DA above the retrained model's, retain accuracy at most RETAIN_LOSS below the
    original's."""
    da, da_r = a.metric("unlearned", "da"), a.metric("retrained", "da")
    acc, acc_o = a.metric("unlearned", "acc_retain"), a.metric("original", "acc_retain")
    if None in (da, da_r, acc, acc_o):
        return False
    return da > da_r and acc >= acc_o - RETAIN_LOSS


def forgets_like_retraining(a: Attempt) -> bool:
    """Forget accuracy within CLOSE of the retrained model's, test accuracy at most CLOSE
    below it."""
    f, f_r = a.metric("unlearned", "acc_forget"), a.metric("retrained", "acc_forget")
    t, t_r = a.metric("unlearned", "acc_test"), a.metric("retrained", "acc_test")
    if None in (f, f_r, t, t_r):
        return False
    return abs(f - f_r) <= CLOSE and t >= t_r - CLOSE


@dataclass(frozen=True)
class Exercise:
    key: str
    goal: str  # markdown: what to do
    question: str  # what to look at once it is done
    page: str  # where it is done
    met: Callable[[Attempt], bool]


EXERCISES = (
    Exercise("no_da", "Set λ_DA to 0 and run MUDA. What happens to DA?",
             "Compare its DA with a run at the default λ_DA = 5: without the DA term, "
             "forgetting comes from the recover phase alone.", "pages/unlearn.py", no_da_term),
    Exercise("beyond_retraining", "Reach DA above the retrained model's without losing more "
             "than 1 point of retain accuracy.",
             "Raise λ_DA, or give the forget phase more of each cycle (ratio_forget); watch "
             "acc_retain in the result table.", "pages/unlearn.py", aligned_beyond_retraining),
    Exercise("like_retraining", "Forget like retraining: forget accuracy within 2 points of "
             "the retrained model's, test accuracy no more than 2 points below it.",
             "Any method counts. The gap columns of the result table say how far each "
             "metric is.", "pages/unlearn.py", forgets_like_retraining),
)


def first_met(exercise: Exercise, attempts: Iterable[Attempt]) -> Attempt | None:
    """The first attempt (newest first, as the store lists them) that meets `exercise`."""
    return next((a for a in attempts if exercise.met(a)), None)


def summary(a: Attempt) -> str:
    """One line on what a run reached: DA and retain accuracy beside the baselines'."""
    def show(role: str, key: str) -> str:
        value = a.metric(role, key)
        return "–" if value is None else f"{value:.3f}"

    return (f"run {a.run_id} ({a.method}): DA {show('unlearned', 'da')} (retrained "
            f"{show('retrained', 'da')}), acc_retain {show('unlearned', 'acc_retain')} "
            f"(original {show('original', 'acc_retain')}), acc_forget "
            f"{show('unlearned', 'acc_forget')} (retrained {show('retrained', 'acc_forget')})")
