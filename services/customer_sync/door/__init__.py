"""The webhook door: deliveries checked, recorded durably and answered fast, then applied from
the inbox (or quarantined when they cannot be)."""
