"""Derived facts of the contract, defined once: subscription change kinds.

From consecutive subscription rows of one account: the first row is `new`; to `canceled` is
`churn`; from `canceled` back is `reactivation`; a higher tier is `upgrade`, a lower one
`downgrade`; where the dataset gives the optional `list_mrr` (mrr before discounts), an mrr
change at an unchanged `list_mrr` is `repricing` (a discount starting or ending: the customer
buys nothing more or less, so it is neither an expansion nor a contraction); otherwise the
same tier with higher mrr is `expansion`, lower `contraction`, else `unchanged`. Without
`list_mrr` a discount ending cannot be told from an add-on and counts as an expansion.
Features, labels and analytics all read `subscription_changes` (the MRR bridge books
repricing with expansion or contraction MRR so that it still adds up).
"""

from __future__ import annotations

import duckdb

from features.engine import DuckDBEngine, Engine

EXPANSION_KINDS = ("upgrade", "expansion")
POST_UPSELL_CHURN_KINDS = ("churn", "downgrade", "contraction")
CONTRACTION_KINDS = ("downgrade", "contraction")

# Portable SQL (DuckDB and Spark via sqlglot): LAG over each account's history.
SUBSCRIPTION_CHANGES_SQL = """
SELECT
    s.account_id,
    s.effective_at,
    s.plan_id,
    p.tier,
    s.seats,
    s.mrr,
    s.status,
    LAG(p.tier) OVER w AS prev_tier,
    LAG(s.mrr) OVER w AS prev_mrr,
    LAG(s.status) OVER w AS prev_status,
    LAG(s.seats) OVER w AS prev_seats,
    CASE
        WHEN LAG(s.status) OVER w IS NULL THEN 'new'
        WHEN s.status = 'canceled' AND LAG(s.status) OVER w <> 'canceled' THEN 'churn'
        WHEN s.status = 'canceled' THEN 'unchanged'
        WHEN LAG(s.status) OVER w = 'canceled' THEN 'reactivation'
        WHEN p.tier > LAG(p.tier) OVER w THEN 'upgrade'
        WHEN p.tier < LAG(p.tier) OVER w THEN 'downgrade'
        WHEN s.list_mrr = LAG(s.list_mrr) OVER w AND s.mrr <> LAG(s.mrr) OVER w
            THEN 'repricing'
        WHEN s.mrr > LAG(s.mrr) OVER w THEN 'expansion'
        WHEN s.mrr < LAG(s.mrr) OVER w THEN 'contraction'
        ELSE 'unchanged'
    END AS change_kind
FROM subscriptions s
JOIN plans p ON p.plan_id = s.plan_id
WINDOW w AS (PARTITION BY s.account_id ORDER BY s.effective_at)
"""


def create_subscription_changes(engine: Engine | duckdb.DuckDBPyConnection) -> None:
    """Materialize `subscription_changes` on an engine or a DuckDB connection (idempotent)."""
    if isinstance(engine, duckdb.DuckDBPyConnection):
        engine = DuckDBEngine(engine)
    engine.create_table("subscription_changes", SUBSCRIPTION_CHANGES_SQL, temp=False)
