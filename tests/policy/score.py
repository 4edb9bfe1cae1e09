"""Developer tool: score the engine on the compatibility corpus.

    python -m tests.policy.score [-v] [CASE_ID_PREFIX ...]

Prints the pass rate per category and, with ``-v``, the first difference of
every failing case. Not a test; the corpus test is ``test_corpus.py``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from pyheadscale.policy.simulate import simulate_case
from tests.policy.compare import compare_case
from tests.policy.corpus import CORPUS_DIR, case_files


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    prefixes = [a for a in argv if not a.startswith("-")]
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for path in case_files():
        case = json.loads(path.read_text(encoding="utf-8"))
        if prefixes and not any(case["id"].startswith(p) for p in prefixes):
            continue
        try:
            problems = compare_case(case["expected"], simulate_case(case))
        except Exception as exc:
            problems = [f"crash: {type(exc).__name__}: {exc}"]
        total[case["category"]] += 1
        if problems:
            if verbose:
                print(f"FAIL {case['id']}: {problems[0][:300]}")
        else:
            passed[case["category"]] += 1
    for category in sorted(total):
        rate = 100 * passed[category] / total[category]
        print(f"{category:12} {passed[category]:4}/{total[category]:4} {rate:6.1f}%")
    print(f"corpus: {CORPUS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
