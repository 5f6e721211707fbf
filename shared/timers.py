"""The one periodic-task entrypoint services use: nameko's timer with its interval taken from a
setting when the service starts, so each background step is tuned by environment, not code."""
from __future__ import annotations

from nameko.timer import Timer

from shared.config import from_nameko


class ConfiguredTimer(Timer):
    """`@ConfiguredTimer.decorator(setting="GDPR_PROCESS_SECONDS")`: fires every that many
    seconds (or as soon as the previous run finished, if it took longer). A timer entrypoint,
    unlike a managed thread, runs a worker, so the method has the service's RPC proxies."""

    def __init__(self, setting: str, eager: bool = False, **kwargs) -> None:
        self.setting = setting
        super().__init__(interval=None, eager=eager, **kwargs)

    def setup(self) -> None:
        self.interval = from_nameko(self.container.config).float(self.setting)
        super().setup()
