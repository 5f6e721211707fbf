"""Route handlers by area: each translates HTTP input to RPC calls and back, nothing more."""
