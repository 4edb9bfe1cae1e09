"""The control protocol's wire types, as tailscale's tailcfg package names them, and their encodings.

- requests: RegisterRequest and MapRequest, parsed and checked (a bad field is a 400 naming it);
- hostinfo: the Hostinfo a node reports, checked against tailcfg's types and bounded;
- register: RegisterResponse;
- map_response: MapResponse, and how a client applies each field of a delta;
- node, dns, derp_map, filter, ssh: the parts of a MapResponse (ssh also the SSHAction a check answers);
- frame: map frames (length, optional zstd, JSON), encoded by the server, decoded by our client and tests;
- gotime: times as Go's JSON writes them.

Responses are TypedDicts: plain dicts at run time (the map path is hot, and the encoder takes them as they
are), checked by mypy. Their modules leave out `from __future__ import annotations`: with it, Python 3.11
cannot tell a NotRequired key from a required one at run time, and the shape tests read that.
"""
