"""`python -m services [NAME ...]`: run services in the foreground until Ctrl-C.

eventlet must patch the standard library before anything else imports it, hence this tiny
entry module; everything else lives in `services.runner`.
"""
import warnings

# eventlet announces its maintenance mode on import; docs/design.md records that choice already.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

from services.runner import main  # noqa: E402

raise SystemExit(main())
