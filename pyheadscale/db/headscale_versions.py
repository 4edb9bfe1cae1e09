"""Which Headscale release last wrote a database, read from the migration ids Headscale records.

Headscale (through gormigrate) keeps one row per migration it has run in a table `migrations`; a fresh
database gets every id of its release at once. The ids of each release from v0.26.0 to v0.29.2 are listed here
(facts read from Headscale's hscontrol/db/db.go at each tag), so a database is placed by the earliest release
that knows all of its ids, and one carrying an id no supported release has is newer (or stranger) than we take
over.
Since v0.29 Headscale also writes its own version into `database_versions`; a newer one there is refused too.
"""

from __future__ import annotations

import re

_V025_AND_OLDER = (
    "202312101416 202312101430 202402151347 2024041121742 202406021630 202409271400 202407191627 202408181235"
)
_V026 = "202501221827 202501311657 202502070949 202502131714 202502171819 202505091439 202505141324"
_V027_0 = "202507021200"
_V027_1 = "202510311551 202511101554-drop-old-idx"
_V028 = (
    "202511011637-preauthkey-bcrypt 202511122344-remove-newline-index 202511131445-node-forced-tags-to-tags "
    "202601121700-migrate-hostinfo-request-tags"
)
_V029_0 = "202602201200-clear-tagged-node-user-id 202605221435-clear-zero-time-node-expiry"
_V029_1 = "202606181200-recover-null-tags-node-user-id"

RELEASES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (name, frozenset(" ".join(parts).split()))
    for name, parts in (
        ("v0.26", (_V025_AND_OLDER, _V026)),
        ("v0.27.0", (_V025_AND_OLDER, _V026, _V027_0)),
        ("v0.27.1", (_V025_AND_OLDER, _V026, _V027_0, _V027_1)),
        ("v0.28", (_V026, _V027_0, _V027_1, _V028)),
        ("v0.29.0", (_V026, _V027_0, _V027_1, _V028, _V029_0)),
        ("v0.29.1-v0.29.2", (_V026, _V027_0, _V027_1, _V028, _V029_0, _V029_1)),
    )
)
"""Each supported release (or run of releases with equal migrations) and the ids it records, oldest first."""

SCHEMA_INIT = "SCHEMA_INIT"
"""What gormigrate records when it made the whole schema of a fresh database at once (every id follows)."""
KNOWN_IDS = frozenset({SCHEMA_INIT}).union(*(ids for _, ids in RELEASES))
OLDEST_ID = "202505141324"
"""The last migration of v0.26.0: a database without it predates the oldest release we take over."""
NEWEST_SUPPORTED = (0, 29, 2)


class UnsupportedHeadscaleDatabase(Exception):
    """A Headscale database we will not take over; the message names what was found. Nothing was changed."""


def release_of(migration_ids: set[str], recorded_version: str | None) -> str:
    """The Headscale release (range) whose schema the database has, or UnsupportedHeadscaleDatabase."""
    unknown = sorted(migration_ids - KNOWN_IDS)
    if unknown:
        raise UnsupportedHeadscaleDatabase(
            f"the Headscale database has migration(s) {', '.join(unknown[:3])} that Headscale v0.26 to "
            "v0.29.2 do not have: it was written by a newer (or modified) Headscale, which pyheadscale "
            "does not take over"
        )
    if OLDEST_ID not in migration_ids:
        raise UnsupportedHeadscaleDatabase(
            "the Headscale database predates v0.26 (migration "
            f"{OLDEST_ID} has not run): upgrade it with Headscale v0.26 to v0.29.2 first, then start "
            "pyheadscale"
        )
    if recorded_version is not None:
        parsed = parse_version(recorded_version)
        if parsed is not None and parsed > NEWEST_SUPPORTED:
            raise UnsupportedHeadscaleDatabase(
                f"the Headscale database was last written by Headscale {recorded_version}, newer than "
                "v0.29.2, the newest release pyheadscale takes over"
            )
    seen = {SCHEMA_INIT}
    for name, ids in RELEASES:
        seen |= ids
        if migration_ids <= seen:
            return name
    raise AssertionError("unreachable: every known id belongs to a release")


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of `v0.29.2`-like text (a pre-release counts as its release), else None."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None
