"""`make readme-tables`: copy the tables of the last `make demo` into README.md.

Why: the README's demo tables went stale (they were typed in once); now they are the demo's
own output, `.demo/demo_tables.md`, pasted between two markers, with the build that made them.
"""

from __future__ import annotations

import sys
from pathlib import Path

BEGIN = "<!-- demo-tables:begin (make demo && make readme-tables) -->"
END = "<!-- demo-tables:end -->"


def update(readme: Path, tables: Path) -> bool:
    """Replace the block between the markers; True when README.md changed."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block")
    if not tables.exists():
        raise SystemExit(f"{tables} does not exist; run `make demo` first")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{tables.read_text(encoding='utf-8').strip()}\n{END}{tail}"
    readme.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    readme = Path(args[0] if args else "README.md")
    tables = Path(args[1] if len(args) > 1 else ".demo/demo_tables.md")
    changed = update(readme, tables)
    print(f"{readme}: demo tables {'updated' if changed else 'already up to date'} from {tables}")


if __name__ == "__main__":
    main()
