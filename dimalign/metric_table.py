"""The metric table: one entry per metric `metrics.evaluate` reports, in display order.

Each entry says what the metric is (title, one-line description, range), which way is better
(or that closeness to the retrained model is what matters), whether avg-gap averages it, and
where it is shown. The CLI, the pages, the plots and avg-gap read this table; adding a metric
touches this table, its computation in `metrics.py` and its test. Pure Python: no torch, no
streamlit, so anything may import it.

Places a metric can be shown (`Metric.shown`):
    "cli"         `dimalign compare`'s table (value and gap per method)
    "compare"     the Compare page's table and its trade-off chart
    "experiment"  the Experiment page's baseline table
    "unlearn"     the Unlearn page's result table (the run's models and its ghosts)
    "effect"      the Unlearn page's effect panel (what the last change did)
    "curves"      the live curves, on the panel of the metric's group
`dimalign run`'s table and an exported report list every metric a run has, in table order.
An entry marked `per_stratum` is also reported on each stratum of a random forget set
(`metrics.stratum_metrics`, `dimalign/strata.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

SCENARIOS = frozenset({"class", "random", "backdoor"})  # config.SCENARIO_KINDS
PLACES = ("cli", "compare", "experiment", "unlearn", "effect", "curves")
GROUPS = ("accuracy", "privacy", "alignment", "probe", "representation", "summary", "cost")
BETTER = ("higher", "lower", None)


@dataclass(frozen=True)
class Metric:
    """One metric. `better` is None where no direction is right in itself: what matters is the
    distance to the retrained model (e.g. acc_forget, which retraining leaves near test
    accuracy in a random scenario). `distance`: the value already is a distance to the
    retrained model (avg-gap), so its gap to retrained is the value itself."""

    name: str  # the key in results, JSON, CSV and table columns
    title: str  # short label where a label is drawn (effect panel, headers, axes)
    description: str  # one line
    group: str  # one of GROUPS; the live curves draw one panel per group
    low: float | None = 0.0  # range, inclusive; None = unbounded
    high: float | None = 1.0
    better: str | None = None  # "higher", "lower" or None (closeness to retrained)
    in_avg_gap: bool = False  # avg-gap averages |model - retrained| over these
    distance: bool = False
    scenarios: frozenset[str] = SCENARIOS  # the scenarios evaluate reports it in
    # the value is the spread (sd) of another metric, shown beside it; it has no gap
    spread_of: str | None = None
    shown: frozenset[str] = frozenset()  # places of PLACES that show it
    # also reported per stratum of a random forget set, on the stratum's samples alone
    # (`metrics.stratum_metrics`; dimalign/strata.py)
    per_stratum: bool = False

    def __post_init__(self) -> None:
        where = f"metric {self.name!r}"
        if self.better not in BETTER:
            raise ValueError(f"{where}: better must be 'higher', 'lower' or None, "
                             f"got {self.better!r}")
        if self.group not in GROUPS:
            raise ValueError(f"{where}: group {self.group!r} is not one of {', '.join(GROUPS)}")
        if unknown := set(self.shown) - set(PLACES):
            raise ValueError(f"{where}: unknown places {sorted(unknown)}; "
                             f"known: {', '.join(PLACES)}")
        if unknown := set(self.scenarios) - SCENARIOS:
            raise ValueError(f"{where}: unknown scenarios {sorted(unknown)}")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"{where}: range low {self.low} must be below high {self.high}")

    @property
    def range(self) -> tuple[float | None, float | None]:
        return self.low, self.high


CLASS, BACKDOOR = frozenset({"class"}), frozenset({"backdoor"})


def _places(*names: str) -> frozenset[str]:
    return frozenset(names)


METRICS: tuple[Metric, ...] = (
    Metric("acc_retain", "Acc. retain", "accuracy on the retain set D_r", "accuracy",
           better="higher", in_avg_gap=True,
           shown=_places("cli", "compare", "experiment", "unlearn", "curves")),
    Metric("acc_forget", "Acc. forget", "accuracy on the forget set D_f (retraining sets the "
           "target: near test accuracy when forgetting random samples)", "accuracy",
           in_avg_gap=True, per_stratum=True,
           shown=_places("cli", "compare", "experiment", "unlearn", "effect", "curves")),
    Metric("acc_test", "Acc. test", "accuracy on the test set D_t", "accuracy",
           better="higher", in_avg_gap=True,
           shown=_places("cli", "compare", "experiment", "unlearn", "curves")),
    Metric("acc_test_kept", "Acc. test (kept)", "test accuracy on the classes that are kept",
           "accuracy", better="higher", scenarios=CLASS,
           shown=_places("cli", "unlearn", "effect")),
    Metric("acc_test_forgotten", "Acc. test (forgotten)", "test accuracy on the forgotten "
           "classes", "accuracy", scenarios=CLASS),
    Metric("asr", "ASR", "attack success: the fraction of trigger-stamped test images sent to "
           "the target class (should fall to the retrained model's level)", "accuracy",
           scenarios=BACKDOOR, shown=_places("cli")),
    Metric("mia", "MIA", "MIA-efficacy: an RBF SVC on one output feature (eval.mia_feature, "
           "default confidence; retain = members, test of kept classes = non-members) applied "
           "to D_f; the fraction predicted non-member, mean over eval.mia_repeats draws",
           "privacy", in_avg_gap=True, per_stratum=True,
           shown=_places("cli", "compare", "experiment", "unlearn")),
    Metric("mia_sd", "MIA sd", "standard deviation of MIA over its eval.mia_repeats draws of "
           "the shadow sets", "privacy", spread_of="mia", per_stratum=True,
           shown=_places("compare", "experiment", "unlearn")),
    Metric("da", "DA", "Dimensional Alignment of D_f features with the top-k retain "
           "eigenspace", "alignment", better="higher", per_stratum=True,
           shown=_places("cli", "compare", "experiment", "unlearn", "effect", "curves")),
    Metric("da_test", "DA test", "Dimensional Alignment of D_t features with the same retain "
           "eigenspace (a reference)", "alignment"),
    Metric("da_k", "k of DA", "the number k of retain eigenvectors DA used", "alignment",
           low=1, high=None),
    Metric("lp_forget", "LP forget", "linear probe (fitted on half the test set, frozen "
           "features): accuracy on D_f", "probe", per_stratum=True,
           shown=_places("cli", "compare", "experiment")),
    Metric("lp_test", "LP test", "linear probe: accuracy on the other half of the test set",
           "probe", better="higher"),
    Metric("f1_forget", "F1 forget", "the forgotten classes' F1 under the linear probe",
           "probe", scenarios=CLASS),
    Metric("nmi", "NMI", "k-means (k = classes) on D_f + D_t features: NMI against the labels",
           "representation", shown=_places("cli", "compare")),
    Metric("effective_rank", "Effective rank", "Roy & Vetterli's: exp(entropy) of the retain "
           "features' normalised singular values (centred with eval.center)", "representation",
           low=1, high=None, shown=_places("experiment")),
    Metric("cka_retrained", "CKA retrained", "linear CKA of D_f + D_t features to the "
           "retrained model's", "representation", better="higher",
           shown=_places("cli", "compare")),
    Metric("cka_original", "CKA original", "linear CKA of D_f + D_t features to the original "
           "model's", "representation"),
    Metric("avg_gap", "avg-gap", "mean |model - retrained| over the metrics marked in avg-gap "
           "(the accuracies on D_r, D_f, D_t and MIA)", "summary", better="lower",
           distance=True, per_stratum=True, shown=_places("cli", "compare", "unlearn", "effect")),
)
TABLE: dict[str, Metric] = {m.name: m for m in METRICS}
if len(TABLE) != len(METRICS):
    raise ValueError("metric names must be unique")
if bad := [m.name for m in METRICS if m.spread_of and m.spread_of not in TABLE]:
    raise ValueError(f"spread_of names an unknown metric: {bad}")

# the cost column next to the metrics wherever methods are compared; computed by the runner
# from wall seconds (not by evaluate), so it is not in METRICS
TIME_FRACTION = Metric("time_fraction", "time / retraining", "wall time as a fraction of "
                       "retraining time", "cost", low=0.0, high=None, better="lower",
                       shown=_places("cli", "compare"))


def shown(place: str, group: str | None = None) -> tuple[str, ...]:
    """Names of the metrics a place shows (only those of `group` if given), in table order."""
    if place not in PLACES:
        raise ValueError(f"unknown place {place!r}; known: {', '.join(PLACES)}")
    return tuple(m.name for m in METRICS
                 if place in m.shown and (group is None or m.group == group))


def for_scenario(kind: str) -> tuple[str, ...]:
    """Names of the metrics evaluate reports in a scenario ("class", "random", "backdoor")."""
    if kind not in SCENARIOS:
        raise ValueError(f"unknown scenario {kind!r}; known: {', '.join(sorted(SCENARIOS))}")
    return tuple(m.name for m in METRICS if kind in m.scenarios)


def per_stratum() -> tuple[str, ...]:
    """Names of the metrics reported per stratum of a random forget set, in table order."""
    return tuple(m.name for m in METRICS if m.per_stratum)


def avg_gap_keys() -> tuple[str, ...]:
    return tuple(m.name for m in METRICS if m.in_avg_gap)


def ordered(keys: Iterable[str]) -> list[str]:
    """Keys in table order; keys the table does not know keep their order, after them."""
    keys = list(dict.fromkeys(keys))
    known = set(keys) & set(TABLE)
    return [m.name for m in METRICS if m.name in known] + [k for k in keys if k not in TABLE]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def avg_gap(row: dict, reference: dict) -> float | None:
    """Mean |row − reference| over the avg-gap metrics (the accuracies and MIA), skipping
    missing (None or NaN) entries; None when none is left."""
    gaps = [abs(gap) for k in avg_gap_keys()
            if (gap := gap_to_retrained(k, row.get(k), reference.get(k))) is not None]
    return math.fsum(gaps) / len(gaps) if gaps else None


def gap_to_retrained(key: str, value: float | None, retrained: float | None) -> float | None:
    """A metric's gap to the retrained model: value − retrained value (signed). None where
    either is missing (None or NaN), and for a spread (an sd has no gap). A distance metric
    (avg-gap) already measures the gap: it is returned as it is, whatever the retrained
    value."""
    metric = TABLE.get(key)
    if _missing(value) or (metric is not None and metric.spread_of):
        return None
    if metric is not None and metric.distance:
        return value
    if _missing(retrained):
        return None
    return value - retrained
