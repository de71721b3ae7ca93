"""The registry of what a bounty or payout can be denominated in.

Symbol → decimals and, per chain id, the token contract (none for the chain's
native coin). Matching is case-insensitive; symbols are reported in upper case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from types import MappingProxyType

# Wide enough for any amount the grammar admits (at most 80 digits): exact, never rounded.
EXACT = Context(prec=100)


@dataclass(frozen=True)
class Denomination:
    symbol: str
    decimals: int
    contracts: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    def base_units(self, amount: Decimal) -> int | None:
        """The amount in the smallest unit, or None when it has more decimals than allowed."""
        scaled = amount.scaleb(self.decimals, context=EXACT)
        if scaled != scaled.to_integral_value():
            return None
        return int(scaled)


Registry = Mapping[str, Denomination]

DEFAULT_REGISTRY: Registry = MappingProxyType({
    "ETH": Denomination("ETH", 18),
    # Ethereum mainnet token contracts (chain id 1).
    "USDC": Denomination("USDC", 6, MappingProxyType(
        {1: "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"})),
    "DAI": Denomination("DAI", 18, MappingProxyType(
        {1: "0x6B175474E89094C44Da98b954EedeAC495271d0F"})),
})


def registry_from_json(text: str) -> Registry:
    """`{"USDC": {"decimals": 6, "contracts": {"1": "0x…"}}, …}` → a registry."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("the denomination registry must be a JSON object")
    return MappingProxyType({
        symbol.upper(): Denomination(
            symbol.upper(), int(entry["decimals"]),
            MappingProxyType({int(k): str(v) for k, v in entry.get("contracts", {}).items()}))
        for symbol, entry in raw.items()
    })
