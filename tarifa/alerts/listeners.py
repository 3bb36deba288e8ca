"""Alert checks run as their own jobs after a summary changes: they never block or fail a fold."""

from __future__ import annotations

from tarifa.alerts.services import check_allowance_alerts
from tarifa.events.listeners import listens_to


@listens_to("summary.updated", name="alerts.allowance_thresholds",
            when=lambda payload: payload.get("allowance_threshold_crossed", True))
def on_summaries_updated(events) -> None:
    check_allowance_alerts(summary_ids=sorted({event.payload["summary_id"] for event in events}))
