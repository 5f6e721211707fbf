"""`python -m ops.healthcheck SERVICE`: exit 0 when SERVICE answers RPC `health()` ready.

For services without an HTTP server (compose healthchecks, operators' scripts)."""
from __future__ import annotations

import sys
import warnings

from shared.config import Config
from shared.tls import amqp_ssl_options

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def main(argv: list[str] | None = None) -> int:
    # Imported here, after the warning filter above, so a check prints only its verdict.
    from nameko.standalone.rpc import ClusterRpcProxy

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ops.healthcheck SERVICE", file=sys.stderr)
        return 2
    try:
        config = Config()
        proxy_config = {"AMQP_URI": config.get("AMQP_URI"), "AMQP_SSL": amqp_ssl_options(config)}
        with ClusterRpcProxy(proxy_config, timeout=10) as rpc:
            state = getattr(rpc, args[0]).health()
    except Exception as exc:  # unreachable, timed out, unknown service: all "not healthy"
        print(f"{args[0]}: not answering ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"{args[0]}: {'ready' if state.get('ready') else 'not ready'} {state.get('checks')}")
    return 0 if state.get("ready") else 1


if __name__ == "__main__":
    sys.exit(main())
