"""Headscale's management API over gRPC (`grpc_listen_addr`), for Headscale's own remote CLI and tools."""
