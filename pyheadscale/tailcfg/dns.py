"""tailcfg.DNSConfig: the resolvers, search domains and records a node's DNS (MagicDNS) uses."""

from typing import TypedDict


class Resolver(TypedDict):
    """A DNS resolver (dnstype.Resolver): an IP, IP:port, or a DoH URL."""

    Addr: str


class DNSRecord(TypedDict):
    """One extra record MagicDNS answers (dns.extra_records): Name, Type ("A" or "AAAA") and Value."""

    Name: str
    Type: str
    Value: str


class DNSConfig(TypedDict, total=False):
    """A node's DNS settings, always sent whole: a client replaces what it held, never merges."""

    Proxied: bool
    """MagicDNS on: the client answers for the tailnet's names."""
    Resolvers: list[Resolver]
    """The resolvers for all names, replacing the host's own (dns.override_local_dns)."""
    FallbackResolvers: list[Resolver]
    """Resolvers used only when the host's own cannot serve (split DNS without overriding)."""
    Routes: dict[str, list[Resolver]]
    """Split DNS: a domain suffix -> the resolvers for names under it; an empty list means MagicDNS itself."""
    Domains: list[str]
    """Search domains, without the trailing dot."""
    ExtraRecords: list[DNSRecord]
