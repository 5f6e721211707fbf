"""`python -m bench.profiled_service NAME`: `python -m services NAME` under cProfile when NAME
is the service named by BENCH_PROFILE_SERVICE, its profile written at exit (a graceful stop)
to BENCH_PROFILE_DIR/NAME.PID.prof; any other service runs as it would without it.

`python -m bench.system --profile-service NAME` starts every service through this module, so
one service's CPU can be read function by function in the same run as the figures (for
example `python -c "import pstats; pstats.Stats('notifications.123.prof').sort_stats('tottime')
.print_stats(30)"`). Every greenlet runs on the one OS thread cProfile watches, so `tottime` is
trustworthy and `cumtime` of anything that yields to the hub is not.
"""
import warnings

# eventlet announces its maintenance mode on import; docs/design.md records that choice already.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import cProfile  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from services.runner import main  # noqa: E402

PROFILE_SERVICE = "BENCH_PROFILE_SERVICE"
PROFILE_DIR = "BENCH_PROFILE_DIR"


def run_profiled(argv: list[str]) -> int:
    """Run the services named in `argv`, under cProfile if they are just the profiled one."""
    wanted = os.environ.get(PROFILE_SERVICE)
    if not wanted or argv != [wanted]:
        return main(argv)
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main(argv)
    finally:
        profile.disable()
        out = Path(os.environ.get(PROFILE_DIR) or ".") / f"{wanted}.{os.getpid()}.prof"
        profile.dump_stats(str(out))


raise SystemExit(run_profiled(sys.argv[1:]))
