"""The node registry: every node's current record, found by id, node key or machine key, and the names taken.

It holds records only; the store writes a change through to the database first and then puts the new record
here. Records are frozen and replaced whole, so a reader holding one (a map builder's cache keyed by the
record) knows it is current exactly while the registry still holds that same object.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pyheadscale.state.errors import NotFound
from pyheadscale.state.models import Node
from pyheadscale.state.names import dns_label


class NodeRegistry:
    def __init__(self) -> None:
        self._by_id: dict[int, Node] = {}
        self._by_node_key: dict[str, int] = {}
        self._by_machine_key: dict[str, int] = {}
        self._given_names: set[str] = set()
        self.by_id: Mapping[int, Node] = MappingProxyType(self._by_id)

    def get(self, node_id: int) -> Node:
        node = self._by_id.get(node_id)
        if node is None:
            raise NotFound(f"node {node_id} not found")
        return node

    def by_node_key(self, node_key: str) -> Node | None:
        node_id = self._by_node_key.get(node_key)
        return None if node_id is None else self._by_id.get(node_id)

    def by_machine_key(self, machine_key: str) -> Node | None:
        node_id = self._by_machine_key.get(machine_key)
        return None if node_id is None else self._by_id.get(node_id)

    def put(self, node: Node) -> None:
        """Hold `node` as its id's record, in place of the one held before (keys and name re-indexed)."""
        current = self._by_id.get(node.id)
        if current is not None:
            self._unindex(current)
        self._by_id[node.id] = node
        self._by_node_key[node.node_key] = node.id
        self._by_machine_key[node.machine_key] = node.id
        self._given_names.add(node.given_name)

    def remove(self, node_id: int) -> Node | None:
        node = self._by_id.pop(node_id, None)
        if node is not None:
            self._unindex(node)
        return node

    def _unindex(self, node: Node) -> None:
        if self._by_node_key.get(node.node_key) == node.id:
            del self._by_node_key[node.node_key]
        if self._by_machine_key.get(node.machine_key) == node.id:
            del self._by_machine_key[node.machine_key]
        self._given_names.discard(node.given_name)

    def name_taken(self, label: str, by_other_than: Node) -> bool:
        return label in self._given_names and label != by_other_than.given_name

    def unique_given_name(self, hostname: str) -> str:
        """The DNS label for `hostname`, with `-1`, `-2`... appended when another node holds it."""
        base = dns_label(hostname)
        if base not in self._given_names:
            return base
        n = 1
        while f"{base[:58]}-{n}" in self._given_names:
            n += 1
        return f"{base[:58]}-{n}"
