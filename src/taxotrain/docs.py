"""Generated documentation: ``python -m taxotrain.docs > docs/config.md`` writes the config reference."""

from __future__ import annotations

from taxotrain.config import markdown_reference

if __name__ == "__main__":
    print(markdown_reference(), end="")
