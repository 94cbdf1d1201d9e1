"""Parse every .tf file under a directory with python-hcl2 and print them as one JSON object.

Runs in its own virtual environment (.local/venvs/hcl, made by .ci/setup_infra_venvs.sh):
python-hcl2 and checkov both ship a top-level ``hcl2`` package, so neither goes into the
project venv. Output: ``{"<path relative to the directory>": <parsed file>, ...}`` with string
quotes stripped; a file that does not parse makes the script exit 1 naming it.

    .local/venvs/hcl/bin/python .ci/hcl_dump.py terraform > parsed.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hcl2


def parse(path: Path) -> Any:
    text = path.read_text()
    try:
        from hcl2.utils import SerializationOptions  # python-hcl2 >= 8
    except ImportError:
        return hcl2.loads(text)
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    return hcl2.loads(text, serialization_options=options)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: hcl_dump.py DIRECTORY", file=sys.stderr)
        return 2
    root = Path(argv[1])
    out: dict[str, Any] = {}
    failed = False
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        try:
            out[path.relative_to(root).as_posix()] = parse(path)
        except Exception as exc:
            print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
