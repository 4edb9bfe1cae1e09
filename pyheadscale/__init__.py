"""pyheadscale: a Tailscale-compatible coordination server."""

__version__ = "0.1.0"
