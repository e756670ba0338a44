"""How numbers are shown to people and written to JSON: probabilities that never print as a misleading 0."""
from __future__ import annotations


def significant(p: float, digits: int = 6) -> float:
    """A probability for JSON: `digits` significant digits, so a CTC path's 4e-12 does not print as 0."""
    return float(f"{p:.{digits}g}")


def percent(p: float) -> str:
    """'79.7%', and for tiny probabilities (a long clip's CTC path) significant digits: '0.0042%', never '0.0%'."""
    return f"{100 * p:.1f}%" if p >= 0.001 or p == 0 else f"{100 * p:.2g}%"
