"""Value -> alert type / product group maps: one rule instead of one rule per value.

`alert_type = { from = "{state}", map = { CRITICAL = "Service Critical" }, default = "…" }`:
`from` is rendered, folded (NFC + casefold, as the keys were at load) and looked up; a value
not in the map takes `default`, which is required, so a map never fails at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from bridge.classify.templates import FieldValues, Template
from bridge.classify.text import fold


@dataclass(frozen=True)
class FieldMap:
    source: Template
    mapping: Mapping[str, str]  # folded value -> result
    default: str

    @property
    def outputs(self) -> frozenset[str]:
        return frozenset(self.mapping.values()) | {self.default}

    def lookup(self, fields: FieldValues) -> tuple[str, str]:
        """(result, why) for the trace."""
        value = fold(self.source.render(fields))
        hit = self.mapping.get(value)
        if hit is not None:
            return hit, f"{self.source.source} = {value!r}"
        return self.default, f"{self.source.source} = {value!r} not in the map; default"


def pairs(product_group: str, pg_map: FieldMap | None, alert_type: str,
          at_map: FieldMap | None) -> frozenset[tuple[str, str]]:
    """Every (product group, alert type) a rule can produce, for the catalogue check. Two maps
    reading the same `from` move together (value by value); otherwise every combination."""
    if pg_map is None and at_map is None:
        return frozenset({(product_group, alert_type)})
    if pg_map is None or at_map is None:
        pgs = pg_map.outputs if pg_map is not None else frozenset({product_group})
        ats = at_map.outputs if at_map is not None else frozenset({alert_type})
        return frozenset((p, a) for p in pgs for a in ats)
    if pg_map.source.source == at_map.source.source:
        values = set(pg_map.mapping) | set(at_map.mapping)
        found = {(pg_map.mapping.get(v, pg_map.default), at_map.mapping.get(v, at_map.default))
                 for v in values}
        return frozenset(found | {(pg_map.default, at_map.default)})
    return frozenset((p, a) for p in pg_map.outputs for a in at_map.outputs)
