"""Reading store URLs' query options, the same way for every store."""

from __future__ import annotations


def parse_bool(store: str, name: str, text: str) -> bool:
    """``text``, the value of the URL option ``name`` of a ``store`` store URL, as a boolean:
    ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case. Raises
    ``ValueError`` naming the store, the option and the value for anything else."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{store} store URL option {name}={text!r} is not a boolean")
