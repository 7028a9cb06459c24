"""Print the commands of the README's Quick start: the first fenced block under its heading.

``.ci/run`` runs what this prints, so CI proves the commands a new user copies, as written.
"""
import sys
from pathlib import Path

HEADING = "## Quick start"


def quickstart(readme: str) -> list[str]:
    lines = readme.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith(HEADING)), None)
    if start is None:
        raise SystemExit(f"no '{HEADING}' heading in the README")
    block, inside = [], False
    for line in lines[start + 1:]:
        if line.startswith("## ") and not inside:
            break
        if line.startswith("```"):
            if inside:
                return block
            inside = True
        elif inside:
            block.append(line)
    raise SystemExit(f"no complete fenced block under '{HEADING}'")


if __name__ == "__main__":
    commands = quickstart(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text(encoding="utf-8"))
    print("\n".join(commands))
