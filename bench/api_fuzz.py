"""The OpenAPI-driven property test of the HTTP API (tests/app/web/test_api_properties.py) at
many more examples than the test run uses: no 5xx, every answer as the document declares.

    .venv/bin/python bench/api_fuzz.py [examples per operation, default 2000]

Needs the PostgreSQL of the dev machine (127.0.0.1:5432, database test). Prints the requests
sent per operation and status, and writes the output to bench/results/api_fuzz.txt.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    examples = sys.argv[1] if len(sys.argv) > 1 else "2000"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "--timeout=3600",
            "tests/app/web/test_api_properties.py",
        ],
        cwd=ROOT,
        env=os.environ | {"HARDEN_FUZZ_EXAMPLES": examples},
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    print(output)
    out = ROOT / "bench" / "results" / "api_fuzz.txt"
    header = f"examples per operation: {examples}\nexit status: {result.returncode}\n\n"
    out.write_text(header + output)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
