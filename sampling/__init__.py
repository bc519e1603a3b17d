"""Statistics core of SieveDB: approximate selection and aggregation with guarantees.

Pure numpy/scipy: proxy scores and an oracle callable in, row indices and estimates out. The
oracle is wrapped in :class:`BudgetedOracle`, so it never sees more than ``budget`` distinct rows.
"""

from .active import Candidate, choose_labels
from .aggregate import estimate_aggregate
from .auto_proxy import fit_logistic, predict_logistic, train_proxy
from .bounds import (
    FINITE_SAMPLE_METHODS,
    METHODS,
    interval,
    lower_bound,
    mean_bound,
    upper_bound,
    weighted_mean_bound,
    weighted_mean_interval,
)
from .cascade import select_cascade
from .cluster import AggSpec, UnitAnswer, estimate_unit_aggregates
from .importance import RankedProxy, rank_proxy
from .limit_search import limit_search
from .observation import GroupDensity, ObservationModel, fit_observations, observation_severity
from .oracle import BudgetedOracle, BudgetExceededError
from .precision import select_precision_target
from .proxy_check import advise_flip, check_proxy_ranking
from .recall import DEFAULT_MIX, select_recall_target
from .results import (
    AggregateResult,
    AutoProxy,
    FlipAdvice,
    GroupEstimate,
    LimitResult,
    ProxyCheck,
    SelectionResult,
)

__all__ = [
    "DEFAULT_MIX",
    "FINITE_SAMPLE_METHODS",
    "METHODS",
    "AggSpec",
    "AggregateResult",
    "AutoProxy",
    "BudgetExceededError",
    "BudgetedOracle",
    "Candidate",
    "FlipAdvice",
    "GroupEstimate",
    "LimitResult",
    "ProxyCheck",
    "RankedProxy",
    "SelectionResult",
    "UnitAnswer",
    "advise_flip",
    "check_proxy_ranking",
    "choose_labels",
    "estimate_aggregate",
    "estimate_unit_aggregates",
    "fit_logistic",
    "interval",
    "limit_search",
    "lower_bound",
    "mean_bound",
    "predict_logistic",
    "rank_proxy",
    "select_cascade",
    "select_precision_target",
    "select_recall_target",
    "train_proxy",
    "upper_bound",
    "weighted_mean_bound",
    "weighted_mean_interval",
    "GroupDensity",
    "ObservationModel",
    "fit_observations",
    "observation_severity",
]
