"""Where each request goes: load-aware choice among healthy endpoints, zone failover.

``load.py`` reads a server's own load from its ``/metrics``; ``router.py`` keeps each endpoint's
signals and orders a request's endpoints (health, priority groups); a routing policy
(``policy.py``: one method, one module each) orders the healthy endpoints of the group that takes
the traffic. Each credential selects its policy (``routing_policy``) by a name in ``factory.py``.
``prefix.py`` / ``prefix_index.py``: a prompt's chain of hashes and what each endpoint probably
holds cached, for the prefix-affinity policy (``affinity.py``).
"""

from ..health import HEALTH
from .affinity import Affinity
from .factory import DEFAULT_POLICY, POLICIES, policy_class
from .load import ServerLoad, parse_metrics
from .policy import Assess, RoutingPolicy
from .power_of_two import PowerOfTwo
from .prefix import Prefix
from .router import Router

__all__ = ["ServerLoad", "parse_metrics", "Router", "RoutingPolicy", "Assess", "PowerOfTwo", "Affinity", "Prefix",
           "POLICIES", "DEFAULT_POLICY", "policy_class", "ROUTER"]

ROUTER = Router(HEALTH)
