"""An opt-in cache of whole answers on an operator's Redis (docs/cache.md): ``key`` (which
requests, and their key), ``entry`` (the stored value), ``replay`` (a hit as pieces), ``store``
(Redis with deadlines), ``circuit`` (bypass after errors), ``writer`` (writes after delivery),
``revision`` (the served model's revision), ``cache`` (all of it as one request meets it)."""

from .cache import AnswerCache, Visit, answer_cache, reset_answer_cache
from .entry import Entry
from .replay import replay

__all__ = ["AnswerCache", "Entry", "Visit", "answer_cache", "replay", "reset_answer_cache"]
