"""Live sync of the scores to HubSpot, Salesforce or a signed webhook.

`open_live_target(target)` is the sink for `hubspot://`, `salesforce://`, `https://` and
`webhook+https://` targets; `serving.crm.sync` holds what the three share (retries, rate
limit, checkpoint, partial failures, dry run). See docs/crm-sync.md.
"""

from __future__ import annotations

from urllib.parse import urlsplit

LIVE_PREFIXES = (
    "hubspot://",
    "salesforce://",
    "webhook+https://",
    "webhook+http://",
    "https://",
    "http://",
)


def is_live_target(target: str) -> bool:
    """A target that sends over the network (not `hubspot:DIR`, which writes files)."""
    return target.startswith(LIVE_PREFIXES)


def with_dry_run(target: str, folder: str) -> str:
    """The same target, writing its requests to `folder` instead of sending them."""
    return f"{target}{'&' if '?' in target else '?'}dry_run={folder}"


def system_of(target: str) -> str:
    """hubspot, salesforce or webhook."""
    if target.startswith("hubspot://"):
        return "hubspot"
    if target.startswith("salesforce://"):
        return "salesforce"
    return "webhook"


def open_live_target(target: str):
    """The `LiveSink` for a live target string."""
    from serving.crm.sync import LiveSink, SyncOptions

    system = system_of(target)
    if system == "hubspot":
        from serving.crm.hubspot import HubSpotConnector as connector_class
    elif system == "salesforce":
        from serving.crm.salesforce import SalesforceConnector as connector_class
    else:
        from serving.crm.webhook import WebhookConnector as connector_class

        host = urlsplit(target.removeprefix("webhook+")).hostname or ""
        if target.removeprefix("webhook+").startswith("http://") and host not in (
            "127.0.0.1",
            "localhost",
            "::1",
        ):
            raise ValueError(f"{target!r}: plain http:// only for loopback; use https://")
    connector, options = connector_class.from_target(target)
    options = SyncOptions.from_query(
        options, max_batch=connector_class.max_batch, default_rate=connector.default_rate
    )
    return LiveSink(connector, options)
