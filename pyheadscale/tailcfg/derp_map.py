"""tailcfg.DERPMap: the DERP relay regions a node may use, and their servers.

The map comes from operators' files and URLs (pyheadscale/derpmap.py) and the embedded relay. Regions from
files and URLs are passed through as written, with only their RegionID and Nodes checked, so every other field
may be missing (a Go client reads a missing field as its zero value).
"""

from typing import TypedDict


class DERPNode(TypedDict, total=False):
    """One relay server of a region."""

    Name: str
    RegionID: int
    HostName: str
    CertName: str
    IPv4: str
    IPv6: str
    STUNPort: int
    """0 means 3478, -1 means no STUN."""
    STUNOnly: bool
    DERPPort: int
    """0 means 443."""
    InsecureForTests: bool
    STUNTestIP: str
    CanPort80: bool


class _DERPRegionRequired(TypedDict):
    RegionID: int
    Nodes: list[DERPNode]


class DERPRegion(_DERPRegionRequired, total=False):
    RegionCode: str
    RegionName: str
    Avoid: bool
    """Do not pick this region as home (deprecated in tailcfg: NoMeasureNoHome says it precisely)."""
    NoMeasureNoHome: bool
    """Never measure this region or pick it as home; use it only to reach a peer whose home it is."""


class DERPMap(TypedDict):
    """Region id (a JSON object key, so a string) -> region. Always sent whole: it replaces the last one."""

    Regions: dict[str, DERPRegion]
