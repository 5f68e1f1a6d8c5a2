"""Upsell analytics: revenue, pipeline, conversion and value metrics as pandas DataFrames.

Each function is named after what it returns and documents its business meaning and window.
Windows are `[start, end)` (default: the dataset's observation window, see
`observation_window`); `freq` is "W" (ISO weeks), "M" or "Q". Subscription change kinds come
from `features.derived`, PQL triggers from `features.triggers`; nothing here redefines them.

- revenue: `mrr_by_period`, `mrr_movements`, `revenue_retention` (NRR/GRR, per period or
  trailing), `nrr_by_signup_cohort`, `upgrades`, `acv_uplift_by_upgrade_path`,
  `acv_uplift_by_segment`, `ltv_estimate`
- pipeline: `pql_status` (weekly trigger flags, the input of the PQL metrics), `pql_entries`,
  `pql_volume`, `pqls_per_100_active`, `pql_first_contacts`, `time_in_pql_status`
- conversion: `outreach_outcomes`, `conversion_by_trigger`, `conversion_by_channel`,
  `holdout_comparison`, `time_to_upsell_from_signup`, `pql_outcomes`,
  `time_from_trigger_to_conversion`
- value: `retention_by_group`, `retention_differential`, `post_upsell_adoption`,
  `nrr_upsold_vs_rest`
- incrementality: `outreach_units`, `assignment_units`, `unit_outcomes`,
  `incremental_outcomes` (treated vs holdout lift with intervals), `sample_size_for_lift`,
  `minimum_detectable_lift`
- helpers: `periods`, `observation_window`, `wilson_interval`, `newcombe_interval`,
  `duration_summary`
"""

from features.analytics.common import LIVE_STATUSES, observation_window, periods
from features.analytics.conversion import (
    conversion_by_channel,
    conversion_by_trigger,
    holdout_comparison,
    outreach_outcomes,
    pql_outcomes,
    time_from_trigger_to_conversion,
    time_to_upsell_from_signup,
    upsell_changes,
)
from features.analytics.incrementality import (
    assignment_units,
    incremental_outcomes,
    minimum_detectable_lift,
    outreach_units,
    sample_size_for_lift,
    unit_outcomes,
)
from features.analytics.pipeline import (
    ANY_TRIGGER,
    pql_entries,
    pql_first_contacts,
    pql_status,
    pql_volume,
    pqls_per_100_active,
    time_in_pql_status,
    trigger_names,
    weekly_as_of_dates,
)
from features.analytics.revenue import (
    acv_uplift_by_segment,
    acv_uplift_by_upgrade_path,
    ltv_estimate,
    mrr_by_period,
    mrr_movements,
    nrr_by_signup_cohort,
    revenue_retention,
    upgrades,
)
from features.analytics.stats import duration_summary, newcombe_interval, wilson_interval
from features.analytics.value import (
    nrr_upsold_vs_rest,
    post_upsell_adoption,
    retention_anchors,
    retention_by_group,
    retention_differential,
)

__all__ = [
    "ANY_TRIGGER",
    "LIVE_STATUSES",
    "acv_uplift_by_segment",
    "acv_uplift_by_upgrade_path",
    "assignment_units",
    "conversion_by_channel",
    "conversion_by_trigger",
    "duration_summary",
    "holdout_comparison",
    "incremental_outcomes",
    "ltv_estimate",
    "minimum_detectable_lift",
    "mrr_by_period",
    "mrr_movements",
    "newcombe_interval",
    "nrr_by_signup_cohort",
    "nrr_upsold_vs_rest",
    "observation_window",
    "outreach_outcomes",
    "outreach_units",
    "periods",
    "post_upsell_adoption",
    "pql_entries",
    "pql_first_contacts",
    "pql_outcomes",
    "pql_status",
    "pql_volume",
    "pqls_per_100_active",
    "retention_anchors",
    "retention_by_group",
    "retention_differential",
    "revenue_retention",
    "sample_size_for_lift",
    "time_from_trigger_to_conversion",
    "time_in_pql_status",
    "time_to_upsell_from_signup",
    "trigger_names",
    "unit_outcomes",
    "upgrades",
    "upsell_changes",
    "weekly_as_of_dates",
    "wilson_interval",
]
