"""tailcfg.DERPMap: the DERP relay regions a node may use, and their servers.

The map comes from operators' files and URLs (pyheadscale/derpmap.py) and the embedded relay; fields of those
are passed through as given, so the types below list what clients read and allow the rest.
"""

from typing import NotRequired, TypedDict


class DERPNode(TypedDict):
    """One relay server of a region."""

    Name: str
    RegionID: int
    HostName: str
    IPv4: NotRequired[str]
    IPv6: NotRequired[str]
    STUNPort: NotRequired[int]
    """0 means 3478, -1 means no STUN."""
    DERPPort: NotRequired[int]
    """0 means 443."""
    InsecureForTests: NotRequired[bool]


class DERPRegion(TypedDict):
    RegionID: int
    RegionCode: str
    RegionName: str
    Nodes: list[DERPNode]
    Avoid: NotRequired[bool]
    NoMeasureNoHome: NotRequired[bool]


class DERPMap(TypedDict):
    """Region id (a JSON object key, so a string) -> region. Always sent whole: it replaces the last one."""

    Regions: dict[str, DERPRegion]
    OmitDefaultRegions: NotRequired[bool]
