"""Corpus cases the engine does not match, each with the reason.

``test_corpus.py`` marks these as ``xfail(strict=True)``: if one starts
passing, the test fails so the entry gets removed.
"""

KNOWN_GAPS: dict[str, str] = {
    "acl-k03": (
        "the capture contradicts itself: squirtle's auto-approved 10.33.0.0/16 reaches beedrill, bulbasaur, "
        "ivysaur and venusaur but not charmander, kakuna or weedle under the same rules (see the corpus "
        "README); no engine can match every node"
    ),
}
