"""DERP relay and STUN server, embeddable in pyheadscale or run standalone."""
