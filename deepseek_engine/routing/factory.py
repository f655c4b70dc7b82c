"""The routing policies an operator can select (the credential field ``routing_policy``).

Adding one: a module beside this one with a ``RoutingPolicy`` subclass, and its line below.
"""

from __future__ import annotations

from ..errors import ConfigError
from .affinity import Affinity
from .policy import RoutingPolicy
from .power_of_two import PowerOfTwo
from .round_robin import RoundRobin

__all__ = ["POLICIES", "DEFAULT_POLICY", "policy_class"]

POLICIES: dict[str, type[RoutingPolicy]] = {
    "power_of_two": PowerOfTwo,
    "round_robin": RoundRobin,
    "prefix_affinity": Affinity,
}
DEFAULT_POLICY = "power_of_two"


def policy_class(name: str) -> type[RoutingPolicy]:
    """The policy an operator selects as ``name``, or a ConfigError naming the choices."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(f"routing_policy must be one of {', '.join(POLICIES)}, got {str(name)[:40]!r}") from None
