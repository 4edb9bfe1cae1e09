"""One tag rule (pyheadscale/tags.py) for the policy, the store and the API: a table of tags each accepts or
refuses, and each layer held to it, so no layer refuses a tag another lets in (the API's lowercase rule aside,
which is Headscale's)."""

from __future__ import annotations

import json

import pytest

from pyheadscale.api.errors import ApiError
from pyheadscale.api.params import check_tags
from pyheadscale.policy.model import parse_policy
from pyheadscale.policy.types import PolicyError
from pyheadscale.state.errors import StateError
from pyheadscale.state.names import validate_tags
from pyheadscale.tags import api_tag_problem, tag_problem

ACCEPTED = [
    "tag:server",
    "tag:web-1",
    "tag:a",
    "tag:Server",  # a policy may own it and a node request it (tailscale's CheckTag allows capitals)
    "tag:web.prod",  # Headscale's policy and API accept dots and underscores
    "tag:k8s_operator",
    "tag:wéb",  # only the first character must be an ASCII letter
]

REFUSED = [
    ("server", "tag must start with 'tag:'"),
    ("Tag:server", "tag must start with 'tag:'"),
    ("", "tag must start with 'tag:'"),
    ("tag:", "tag names must start with a letter, after 'tag:'"),
    ("tag:1web", "tag names must start with a letter, after 'tag:'"),
    ("tag:-web", "tag names must start with a letter, after 'tag:'"),
    ("tag:éwb", "tag names must start with a letter, after 'tag:'"),
    ("tag: web", "tag names must start with a letter, after 'tag:'"),
    ("tag:a b", "tags must not contain spaces"),
    ("tag:web\n", "tags must not contain spaces"),
    ("tag:a\tb", "tags must not contain spaces"),
    ("tag:a\x00b", "tags must not contain control or invisible characters"),
    ("tag:a\u200bb", "tags must not contain control or invisible characters"),
]


@pytest.mark.parametrize("tag", ACCEPTED)
def test_accepted(tag: str) -> None:
    assert tag_problem(tag) is None


@pytest.mark.parametrize("tag, problem", REFUSED)
def test_refused(tag: str, problem: str) -> None:
    assert tag_problem(tag) == problem
    assert api_tag_problem(tag) == problem


def test_api_also_wants_lowercase() -> None:
    assert api_tag_problem("tag:Server") == "tag should be lowercase"
    assert api_tag_problem("tag:WEB.prod") == "tag should be lowercase"
    assert [t for t in ACCEPTED if api_tag_problem(t) is None] == [t for t in ACCEPTED if t == t.lower()]


def _policy_accepts(tag: str) -> bool:
    try:
        parse_policy(json.dumps({"tagOwners": {tag: []}}))
    except PolicyError:
        return False
    return True


def _via_accepted(tag: str) -> bool:
    grant = {"src": ["*"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": [tag]}
    try:
        parse_policy(json.dumps({"tagOwners": {"tag:router": []}, "grants": [grant]}))
    except PolicyError as exc:
        assert "via can only be a tag" in str(exc)
        return False
    return True


def _store_accepts(tag: str) -> bool:
    try:
        validate_tags([tag])
    except StateError:
        return False
    return True


def _api_accepts(tag: str) -> bool:
    try:
        check_tags([tag], "tags")
    except ApiError:
        return False
    return True


@pytest.mark.parametrize("tag", ACCEPTED + [tag for tag, _ in REFUSED])
def test_every_layer_keeps_to_the_one_rule(tag: str) -> None:
    valid = tag_problem(tag) is None
    assert _policy_accepts(tag) is valid
    assert _store_accepts(tag) is valid
    assert _via_accepted(tag) is valid
    assert _api_accepts(tag) is (valid and tag == tag.lower())


@pytest.mark.parametrize("tag, problem", REFUSED)
def test_each_layer_names_the_tag_and_the_problem(tag: str, problem: str) -> None:
    with pytest.raises(StateError) as stored:
        validate_tags(["tag:ok", tag])
    assert str(stored.value) == f"invalid tag {tag!r}: {problem}"
    with pytest.raises(ApiError) as api:
        check_tags([tag], "acl_tags")
    assert api.value.message == f"acl_tags: {tag!r}: {problem}"


def test_long_tags_are_clipped_in_errors() -> None:
    tag = "tag:" + "x" * 1000 + " y"
    with pytest.raises(StateError) as stored:
        validate_tags([tag])
    assert len(str(stored.value)) < 200
