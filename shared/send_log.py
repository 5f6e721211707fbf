"""What notifications' send log may be filtered by: one list for notifications, which checks a
caller's filters against it, and the gateway, which passes them on from the API and console."""
from __future__ import annotations

SEND_FILTERS = ("channel", "status", "template", "customer_id", "workflow_id", "held_reason")
