"""Learn's exercises (dimalign/exercises.py): each check on a finished run's knobs and
metrics."""

from dimalign.exercises import (
    EXERCISES,
    aligned_beyond_retraining,
    attempt,
    first_met,
    forgets_like_retraining,
    no_da_term,
    summary,
)

BASE = {"original": {"acc_retain": 0.98, "acc_forget": 0.97, "acc_test": 0.95, "da": 0.60},
        "retrained": {"acc_retain": 0.97, "acc_forget": 0.0, "acc_test": 0.93, "da": 0.90}}


def run(run_id="r1", method="muda", lambda_da=5.0, **unlearned):
    metrics = {"acc_retain": 0.97, "acc_forget": 0.30, "acc_test": 0.92, "da": 0.80, **unlearned}
    return attempt(run_id, method, {"lambda_da": lambda_da},
                   {"models": {**BASE, "unlearned": metrics}})


def test_lambda_da_zero_counts_only_for_muda():
    assert no_da_term(run(lambda_da=0.0)) and no_da_term(run(lambda_da=0))
    assert not no_da_term(run(lambda_da=5.0))
    assert not no_da_term(run(method="finetune", lambda_da=0.0))


def test_da_beyond_retraining_may_cost_at_most_one_point_of_retain_accuracy():
    assert aligned_beyond_retraining(run(da=0.95, acc_retain=0.975))
    assert aligned_beyond_retraining(run(da=0.95, acc_retain=0.970))  # exactly one point
    assert not aligned_beyond_retraining(run(da=0.95, acc_retain=0.965))
    assert not aligned_beyond_retraining(run(da=0.90, acc_retain=0.98))  # equal is not above
    assert not aligned_beyond_retraining(run(da=None, acc_retain=0.98))  # DA undefined (null)
    assert not aligned_beyond_retraining(run(da=float("nan"), acc_retain=0.98))


def test_forgetting_like_retraining_keeps_test_accuracy_too():
    assert forgets_like_retraining(run(acc_forget=0.015, acc_test=0.92))
    assert not forgets_like_retraining(run(acc_forget=0.05, acc_test=0.92))
    assert not forgets_like_retraining(run(acc_forget=0.0, acc_test=0.90))


def test_a_result_without_the_three_models_is_no_attempt():
    assert attempt("b1", "retrain", {}, {"models": BASE}) is None
    assert attempt("b2", "muda", {}, None) is None


def test_first_met_is_the_newest_run_that_meets_it_and_the_summary_names_it():
    (no_da, beyond, _) = EXERCISES
    runs = [run("new", lambda_da=5.0), run("mid", lambda_da=0.0), run("old", lambda_da=0.0)]
    assert first_met(no_da, runs).run_id == "mid"
    assert first_met(beyond, runs) is None
    line = summary(runs[1])
    assert line.startswith("run mid (muda): DA 0.800 (retrained 0.900)"), line
    assert "acc_retain 0.970 (original 0.980)" in line
    assert all(e.page == "pages/unlearn.py" for e in EXERCISES)
