"""How sizes read for a person: one spelling everywhere (progress lines, preflight, disk errors)."""
from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """Decimal units, as disks and links are sold: 1.5 GB, 320 MB, 12 B; '?' when unknown."""
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"

