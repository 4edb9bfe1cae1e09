"""HuJSON and the policy model: any text gives a document or HuJSONError, and any policy a PolicyEngine or
PolicyError naming the entry, seeded from the policies of the tests and the compatibility corpus."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from pyheadscale.policy import PolicyEngine, PolicyError, PolicyNode, PolicyUser, hujson
from tests.fuzz import bounds
from tests.fuzz.seeds import deeply_nested, json_values, mutated_bytes, mutated_json

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "compat" / "policy"
SEED_POLICIES = [
    b'{"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:web:80,443"]}],'
    b' "tagOwners": {"tag:web": ["alice@example.com"]}}',
    b'{"groups": {"group:eng": ["alice@example.com", "bob@"]}, "hosts": {"db": "100.64.0.9/32"},'
    b' "grants": [{"src": ["group:eng"], "dst": ["db"], "ip": ["tcp:5432"]}],'
    b' "ssh": [{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"],'
    b' "users": ["autogroup:nonroot"], "checkPeriod": "12h"}],'
    b' "autoApprovers": {"routes": {"10.0.0.0/8": ["group:eng"]}, "exitNode": ["tag:web"]},'
    b' "nodeAttrs": [{"target": ["*"], "attr": ["funnel"]}],'
    b' "tests": [{"src": "bob@", "accept": ["db:5432"]}]}',
] + [json.loads(p.read_text())["policy"].encode() for p in sorted(CORPUS.glob("*/*.json"))[::10]]
HUJSON_SNIPPETS = [
    b"// comment\n",
    b"/* block */",
    b",",
    b"]",
    b"}",
    b'"\\u12',
    b"1e99999",
    b"-0.0e-5",
    b"\xff",
]

USERS = [PolicyUser(1, "alice", "alice@example.com"), PolicyUser(2, "bob", "bob@example.org")]
NODES = [
    PolicyNode(1, "a", None, 1, ipv4="100.64.0.1", ipv6="fd7a:115c:a1e0::1", routable_ips=["10.1.0.0/16"]),
    PolicyNode(2, "b", None, 2, ipv4="100.64.0.2", ipv6="fd7a:115c:a1e0::2"),
    PolicyNode(3, "w", None, None, tags=["tag:web"], ipv4="100.64.0.3", ipv6="fd7a:115c:a1e0::3"),
]


@st.composite
def hujson_texts(draw: st.DrawFn) -> str:
    data = draw(mutated_bytes(SEED_POLICIES))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(HUJSON_SNIPPETS)) + data[at:]
    return data.decode(errors=draw(st.sampled_from(["replace", "ignore"])))


texts = st.one_of(
    hujson_texts(),
    mutated_json(SEED_POLICIES).map(bytes.decode),
    json_values.map(json.dumps),
    st.text(max_size=200),
)


@given(texts)
@example(deeply_nested(50_000))
@example(deeply_nested(50_000, '{"a":', "}"))
@example("/*" * 10_000)
def test_hujson(text: str) -> None:
    bounds.call("hujson", hujson.loads, text, allowed=(hujson.HuJSONError,))


@given(texts)
@example(SEED_POLICIES[0].decode())
@example('{"acls": ' + deeply_nested(50_000) + "}")
def test_policy_engine(text: str) -> None:
    engine = bounds.call("policy", PolicyEngine, text, USERS, NODES, allowed=(PolicyError,))
    if engine is not None:
        for node in NODES:
            engine.filter_rules(node.id)
            engine.ssh_policy(node.id)
            engine.peers(node.id)
