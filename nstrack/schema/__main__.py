"""``python -m nstrack.schema``: write ``snapshot.schema.json`` from the models (``--check``: only say
whether it is current; exit 1 if not)."""

from __future__ import annotations

import sys

from . import PATH, schema_text


def main(argv: list[str]) -> int:
    text = schema_text()
    current = PATH.read_text() if PATH.exists() else ""
    if "--check" in argv:
        if current != text:
            print(f"{PATH} is not current: run `make schema`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        PATH.write_text(text)
        print(f"wrote {PATH}")
    else:
        print(f"{PATH} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
