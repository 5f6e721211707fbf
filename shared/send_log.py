"""What notifications' send log may be filtered by, and the words it says a send was held back
with: one list of each for notifications, which checks a caller's filters and writes the
reasons, and the gateway, which passes them on and shows them in the API and console."""
from __future__ import annotations

SEND_FILTERS = ("channel", "status", "template", "customer_id", "workflow_id", "held_reason")

# Why a send was held back, as a word the send log can be filtered and shown by (the `reason`
# beside it says it in full).
HELD_REASONS = ("no_consent", "suppressed", "weekly_cap", "quiet_hours", "cancelled",
                "waiting_for_contact", "customer_inactive", "no_address")
