"""DERP relay and STUN server, embeddable in pyheadscale or run standalone.

DERP (Designated Encrypted Relay for Packets) carries WireGuard packets
between Tailscale nodes, addressed by node public key, when no direct path
works; STUN tells nodes their public address so they can find direct paths.

Embedding (what pyheadscale's aiohttp app does)::

    from aiohttp import web
    from derp.server import DerpServer
    from derp.http import add_derp_routes
    from derp.stun import start_stun_server

    async def node_is_known(node_key: tailkey.NodePublic) -> bool:
        return await store.has_node_key(node_key.text)

    server = DerpServer(
        private_key,                  # tailkey.NodePrivate or its 32 raw bytes
        mesh_key=None,                # a tailkey.DerpMeshKey or its 64 hex digits
        verify_client=node_is_known,  # optional; unknown keys are refused at login
    )
    add_derp_routes(app, server)      # /derp, /derp/probe, /derp/latency-check, /generate_204
    stun = await start_stun_server("0.0.0.0", 3478)   # .local_address, .close()
    await server.start_mesh(["https://derp2.example.com/derp"])   # optional
    ...
    stun.close()
    await server.close()              # also run by the app's on_shutdown hook

Public API:

* ``derp.server.DerpServer(private_key, *, mesh_key=None, verify_client=None,
  verify_client_url=None, verify_client_url_fail_open=False, send_queue_depth=32,
  keepalive_interval=60.0, write_timeout=2.0, handshake_timeout=10.0, reverify_interval=None)``

  - ``await accept(conn, *, ideal_node=None)`` runs one session over any ``derp.conn.Conn``
  - ``await start_mesh(urls, *, ssl=None)``; ``await close(*, restart_notice=None, grace=5.0)``
  - ``public_key``, ``private_key``, ``stats()``, ``client_keys()``, ``remote_client_keys()``,
    ``is_client_connected(key)``, ``connection_count()``
  - ``close_client(key) -> int`` closes every connection of a key whose access was revoked

* ``derp.http.add_derp_routes(app, server) -> None``
* ``await derp.stun.start_stun_server(host, port) -> StunServer`` (``close()``, ``local_address``)
* ``derp.client.DerpClient.connect(url, private_key=None, *, mesh_key=None, ssl=None,
  websocket=False, ...)`` for tests, benchmarks and meshing
* ``derp.derpmap.single_region_derpmap(hostname, *, derp_port, stun_port, ...)``

Verification: ``verify_client`` is awaited with the node's ``NodePublic`` for
every non-mesh client; ``verify_client_url`` instead POSTs
``{"NodePublic": "nodekey:<hex>", "Source": "<ip>"}`` and expects
``{"Allow": true}``, as derper's ``--verify-client-url`` does.  Mesh peers
(holding the mesh key) skip both.  Verification at login is not the end of
it: the embedder calls ``close_client`` when a key loses access (pyheadscale
does on every node change), and with ``reverify_interval`` the server asks
again about every connected client that often and closes those clearly
refused (``--reverify-interval`` of the standalone server).

Not supported: the ``Derp-Fast-Start`` header and the TLS "meta certificate"
that enables it (clients then do the ordinary 101 upgrade), Let's Encrypt
certificates, per-client rate limits, and verification through a local
tailscaled.

Module map: ``frames`` (wire codec), ``handshake`` (login frames), ``conn`` (byte streams), ``receive_buffer``
(what a stream received, kept as its chunks), ``client_conn`` (a client's queues and writer), ``server``
(routing), ``mesh`` (links between
servers), ``admission`` (verify URL), ``http`` (aiohttp routes), ``client``,
``stun``, ``config`` and ``derpmap`` (standalone helpers), ``__main__`` (CLI).
Keys (node keys, the NaCl boxes of the login, the mesh key) are the top-level
``tailkey`` package's types, shared with the control server; ``tailkey``
depends on neither ``derp`` nor ``pyheadscale``, so the relay runs alone.
"""
