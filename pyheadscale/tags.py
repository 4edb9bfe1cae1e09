"""What a tag is: `tag:` and a name. The one rule that the policy, the store and the API all check.

Headscale (v0.29.2) checks tags in two places, with different rules:
- the policy (`Tag.Validate`, for tagOwners keys and grant `via`): the `tag:` prefix, then a name whose first
  character is an ASCII letter ("tag names must start with a letter, after 'tag:'");
- the API (`validateTag`, for SetTags and a preauth key's acl_tags): the prefix, lowercase, no spaces.
Tailscale's client sends only names of ASCII letters, digits and '-' that start with a letter (`CheckTag`).

`tag_problem` is the policy's rule with no white space or control characters anywhere (no client can send such
a tag, and a NUL does not fit a PostgreSQL text column), so any tag a policy can name the store can hold.
`api_tag_problem` adds the API's one further rule, lowercase, so `tag:Server` may be owned in a policy (and
requested by a node) but not set through the API, as in Headscale.
"""

from __future__ import annotations

PREFIX = "tag:"


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a tag (in Headscale's words where it has them), or None when it is one."""
    if not tag.startswith(PREFIX):
        return f"tag must start with {PREFIX!r}"
    name = tag[len(PREFIX) :]
    if not name or not ("a" <= name[0] <= "z" or "A" <= name[0] <= "Z"):
        return f"tag names must start with a letter, after {PREFIX!r}"
    if any(ch.isspace() for ch in name):
        return "tags must not contain spaces"
    if not name.isprintable():
        return "tags must not contain control or invisible characters"
    return None


def api_tag_problem(tag: str) -> str | None:
    """`tag_problem`, and Headscale's API rule that tags are lowercase."""
    problem = tag_problem(tag)
    if problem is None and tag != tag.lower():
        return "tag should be lowercase"
    return problem
