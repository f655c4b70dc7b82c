"""Prefix affinity: a prompt's chain of hashes, the bounded per-endpoint index, and the policy that
composes affinity with the load guard."""

import random

import pytest

from deepseek_engine.health import HealthBook
from deepseek_engine.routing import Affinity, PowerOfTwo, Prefix, Router, ServerLoad, parse_metrics
from deepseek_engine.routing.prefix import CHARS_PER_TOKEN, CHUNK_CHARS, prefix_chain
from deepseek_engine.routing.prefix_index import MIN_CAPACITY_TOKENS, PrefixIndex
from deepseek_engine.settings import parse_endpoints

SYSTEM = "You are the support assistant of Example Corp. " * 200  # about 2.4k tokens, shared by an app


def turns(n, who="alice", system=SYSTEM, **fields):
    """The body Dify sends at turn ``n`` of a conversation: the whole history again."""
    msgs = [{"role": "system", "content": system}]
    for i in range(n):
        msgs.append({"role": "user", "content": f"{who} question {i} " * 30})
        if i < n - 1:
            msgs.append({"role": "assistant", "content": f"answer {i} to {who} " * 40})
    return {"model": "deepseek-v3.2", "messages": msgs, **fields}


def shared(a, b):
    """Links two chains share from their start."""
    n = 0
    for x, y in zip(a[0], b[0], strict=False):
        if x != y:
            break
        n += 1
    return n


# -- the chain ------------------------------------------------------------------------------------
def test_the_next_turn_extends_the_previous_turns_chain():
    t2, t3 = prefix_chain(turns(2), "s"), prefix_chain(turns(3), "s")
    assert shared(t2, t3) == len(t2[0]) and len(t3[0]) > len(t2[0])  # every link of turn 2 again
    assert t3[1] == tuple(sorted(t3[1]))  # token ends grow along the chain
    assert t3[1][-1] == pytest.approx(sum(len(m["content"]) for m in turns(3)["messages"]) / CHARS_PER_TOKEN, abs=8)


def test_every_message_counts_not_only_the_system_prompt():
    """SGLang's chat path once hashed only the first message: two users of one app matched fully."""
    alice, bob = prefix_chain(turns(2, "alice"), "s"), prefix_chain(turns(2, "bob"), "s")
    system_links = 1 + -(-len(SYSTEM) // CHUNK_CHARS)
    assert shared(alice, bob) == system_links  # the template seed and the system prompt, no more


def test_long_messages_match_chunk_by_chunk():
    a = prefix_chain({"model": "m", "messages": [{"role": "user", "content": "x" * 10_000 + "tail a"}]}, "s")
    b = prefix_chain({"model": "m", "messages": [{"role": "user", "content": "x" * 10_000 + "tail b"}]}, "s")
    assert shared(a, b) == 1 + 10_000 // CHUNK_CHARS  # the two whole 4 KB chunks before the difference


@pytest.mark.parametrize("change", [{"model": "deepseek-r1"}, {"chat_template_kwargs": {"thinking": True}},
                                    {"tools": [{"type": "function", "function": {"name": "f"}}]}])
def test_what_changes_the_rendered_template_changes_every_link(change):
    base, other = prefix_chain(turns(2), "s"), prefix_chain({**turns(2), **change}, "s")
    assert shared(base, other) == 0


def test_sampling_settings_do_not_change_the_chain():
    assert prefix_chain(turns(2), "s") == prefix_chain({**turns(2), "temperature": 0.1, "max_tokens": 9}, "s")


def test_another_credential_never_matches():
    """The scope seeds the chain: one workspace's prompts cannot be probed through another's routing."""
    assert shared(prefix_chain(turns(2), "one"), prefix_chain(turns(2), "two")) == 0


def test_a_prefix_is_hashed_only_when_asked():
    p = Prefix(turns(2), "s")
    assert not p.computed
    assert p.tokens > 2000 and p.computed


# -- the index ------------------------------------------------------------------------------------
def test_index_matches_the_longest_recorded_prefix():
    idx = PrefixIndex()
    t2, t3 = prefix_chain(turns(2), "s"), prefix_chain(turns(3), "s")
    idx.record("A", *t2, now=0.0)
    assert idx.match("A", *t3, now=1.0) == t2[1][-1]  # all of turn 2, not turn 3's new messages
    assert idx.match("B", *t3, now=1.0) == 0
    bob = prefix_chain(turns(3, "bob"), "s")
    assert idx.match("A", *bob, now=1.0) == bob[1][1 + -(-len(SYSTEM) // CHUNK_CHARS) - 1]  # the system prompt


def test_index_forgets_after_the_ttl_and_on_drop():
    idx = PrefixIndex(ttl=10.0)
    t2 = prefix_chain(turns(2), "s")
    idx.record("A", *t2, now=0.0)
    assert idx.match("A", *t2, now=9.0) > 0
    assert idx.match("A", *t2, now=11.0) == 0
    idx.record("A", *t2, now=20.0)
    idx.drop("A")
    assert idx.match("A", *t2, now=21.0) == 0 and idx.held("A") == 0


def test_index_evicts_least_recently_used_tails_first_under_its_capacity():
    idx = PrefixIndex()
    idx.set_ceiling("A", 3500)  # tokens the server's KV cache holds
    alice, bob = prefix_chain(turns(3, "alice"), "s"), prefix_chain(turns(3, "bob"), "s")
    idx.record("A", *alice, now=0.0)
    idx.record("A", *bob, now=1.0)
    assert idx.held("A") <= 3500
    system_tokens = len(SYSTEM) // CHARS_PER_TOKEN
    assert idx.match("A", *bob, now=2.0) == bob[1][-1]  # the most recent, whole
    kept = idx.match("A", *alice, now=2.0)
    assert system_tokens <= kept < alice[1][-1]  # alice's last turns went first, the shared head stayed


def test_index_entries_are_bounded_whatever_their_size():
    idx = PrefixIndex(max_entries=50)
    for i in range(40):
        idx.record("A", *prefix_chain(turns(1, f"user{i}", system="short"), "s"), now=float(i))
    assert len(idx._by_url["A"].links) <= 50


def test_capacity_shrinks_when_the_server_reused_less_and_grows_when_it_kept_more():
    idx = PrefixIndex()
    t3 = prefix_chain(turns(3), "s")
    idx.record("A", *t3, now=0.0)
    start = idx.capacity("A")
    predicted = idx.match("A", *t3, now=0.0)
    idx.observe_cached("A", predicted, cached=0, prompt=3000, estimated=t3[1][-1])
    assert idx.capacity("A") < start  # predicted a hit the server did not have
    shrunk = idx.capacity("A")
    idx.observe_cached("A", predicted, cached=int(3000 * predicted / t3[1][-1]), prompt=3000, estimated=t3[1][-1])
    assert idx.capacity("A") == shrunk  # as predicted: nothing to learn
    idx.observe_cached("A", 0, cached=2900, prompt=3000, estimated=t3[1][-1])
    assert idx.capacity("A") > shrunk  # the server kept what the index had forgotten
    for _ in range(100):
        idx.observe_cached("A", predicted, cached=0, prompt=3000, estimated=t3[1][-1])
    assert idx.capacity("A") == MIN_CAPACITY_TOKENS


# -- the router's hooks ---------------------------------------------------------------------------
def test_metrics_give_the_restart_and_kv_size():
    text = ('vllm:num_requests_running{engine="0"} 1\nprocess_start_time_seconds 1700000000.5\n'
            'vllm:prefix_cache_queries_total{engine="0"} 1234\n'
            'vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="2048"} 1.0\n')
    load = parse_metrics(text, now=1.0)
    assert (load.started, load.queries, load.kv_tokens) == (1700000000.5, 1234.0, 32768)
    later = ServerLoad(0, 0, None, 2.0, started=1700000100.0)
    assert later.restarted_since(load) and not load.restarted_since(load)
    assert ServerLoad(0, 0, None, 2.0, queries=10).restarted_since(ServerLoad(0, 0, None, 1.0, queries=50))


def test_router_records_only_a_prefix_a_policy_looked_at_and_drops_it_on_restart_or_ejection():
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    book = HealthBook(threshold=1)
    router = Router(book)
    unseen = Prefix(turns(2), "s")
    router.served(a.url, unseen)
    assert router.prefixes.held(a.url) == 0  # nobody hashed it: a load-only policy pays nothing
    p = Prefix(turns(2), "s")
    router.order((a, b), "s", "prefix_affinity", p)
    router.served(a.url, p)
    assert router.prefixes.match(a.url, *p.chain) == p.tokens
    router.observe_load(a.url, ServerLoad(0, 0, None, 1.0, started=5.0))
    router.observe_load(a.url, None)  # a failed scrape
    assert router.prefixes.held(a.url) > 0
    router.observe_load(a.url, ServerLoad(0, 0, None, 3.0, started=7.0))  # a new process answers
    assert router.prefixes.held(a.url) == 0
    router.served(a.url, p)
    book.failure(a.url, "refused", severe=True)
    router.order((a, b), "s", "prefix_affinity", Prefix(turns(3), "s"))
    assert router.prefixes.held(a.url) == 0  # ejected: it may come back restarted


def test_router_learns_from_the_servers_cached_tokens():
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    router = Router(HealthBook())
    first = Prefix(turns(2), "s")
    router.order((a, b), "s", "prefix_affinity", first)
    router.served(a.url, first)
    nxt = Prefix(turns(3), "s")
    router.order((a, b), "s", "prefix_affinity", nxt)
    assert nxt.predicted[a.url] > 0
    before = router.prefixes.capacity(a.url)
    router.reused(a.url, nxt, {"prompt_tokens": 4000, "prompt_tokens_details": {"cached_tokens": 0}})
    assert router.prefixes.capacity(a.url) < before


# -- the policy -----------------------------------------------------------------------------------
class Fleet:
    """An ``Assess`` with fixed costs and matches."""

    def __init__(self, costs, matches=None, saturated=()):
        self.costs, self.matches, self.saturated = costs, matches or {}, saturated

    def __call__(self, e):
        return self.costs[e.url], e.url in self.saturated

    def match(self, e):
        return self.matches.get(e.url, 0), 4000


EPS = parse_endpoints("http://a:1/v1, http://b:1/v1, http://c:1/v1")
A, B, C = EPS


def first(policy, fleet):
    return policy.rank(list(EPS), fleet)[0]


def test_the_best_match_wins_while_its_cost_stays_within_the_guard():
    costs = {A.url: 1.0, B.url: 1.5, C.url: 3.0}
    half = Affinity(weight=0.5)  # a full match tolerates twice the least loaded's cost
    assert first(half, Fleet(costs, {B.url: 4000})) == B  # 1.5 × (1 − 0.5) < 1.0
    assert first(half, Fleet(costs, {C.url: 4000})) == A  # 3.0: beyond twice the least loaded
    assert first(half, Fleet(costs, {B.url: 1000})) == A  # a quarter matched: 1.5 × 0.875
    assert first(half, Fleet(costs, {B.url: 4000}, saturated={B.url})) == A
    assert first(Affinity(weight=0.5, min_match_tokens=5000), Fleet(costs, {B.url: 4000})) == A
    assert first(Affinity(), Fleet(costs, {C.url: 4000})) == C  # the default 0.75: 3.0 × 0.25 < 1.0
    assert first(Affinity(), Fleet({**costs, C.url: 4.5}, {C.url: 4000})) == A  # beyond 4x
    ranked = half.rank(list(EPS), Fleet(costs, {B.url: 4000}))
    assert ranked == [B, A, C]  # the rest by load, for failover


def test_with_affinity_off_it_is_the_load_policy_draw_for_draw():
    many = parse_endpoints(", ".join(f"http://e{i}:1/v1" for i in range(20)))  # power of two choices here
    rng = random.Random(5)
    costs = {e.url: rng.uniform(0.1, 1.0) for e in many}
    fleet = Fleet(costs, {e.url: 4000 for e in many[::3]})
    off, load = Affinity(weight=0.0, load=PowerOfTwo(random.Random(9))), PowerOfTwo(random.Random(9))
    assert [off.rank(list(many), fleet) for _ in range(50)] == [load.rank(list(many), fleet) for _ in range(50)]


def test_weight_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="weight"):
        Affinity(weight=1.0)


def test_one_gateway_url_is_left_to_the_gateway():
    """Given one URL (a gateway that routes by prefix itself), the policy has nothing to decide:
    nothing is hashed, recorded or learnt, whatever the server reports."""
    (gw,) = parse_endpoints("http://gateway:30000/v1")
    router = Router(HealthBook())
    p = Prefix(turns(3), "s")
    assert router.order((gw,), "s", "prefix_affinity", p) == [gw]
    router.served(gw.url, p)
    router.reused(gw.url, p, {"prompt_tokens": 4000, "prompt_tokens_details": {"cached_tokens": 0}})
    assert not p.computed and router.prefixes.held(gw.url) == 0


# -- the correction from /metrics, when usage does not say -----------------------------------------
def _scrape(at, queries, hits):
    return ServerLoad(0, 0, None, at, started=1.0, queries=queries, hits=hits)


def _router_after_a_window():
    """A router that scraped A, then served 6 conversations' third turns there, each predicted a
    hit on A."""
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    router = Router(HealthBook())
    router.observe_load(a.url, _scrape(1.0, 10_000, 5_000))
    for i in range(6):
        first = Prefix(turns(2, who=f"u{i}"), "s")
        router.order((a, b), "s", "prefix_affinity", first)
        router.served(a.url, first)
        nxt = Prefix(turns(3, who=f"u{i}"), "s")
        router.order((a, b), "s", "prefix_affinity", nxt)
        assert nxt.predicted[a.url] > 0
        router.served(a.url, nxt)
    return router, a, b


def test_metrics_give_the_prefix_cache_hits():
    vllm = parse_metrics('vllm:num_requests_running{engine="0"} 1\n'
                         'vllm:prefix_cache_queries_total{engine="0"} 1000\n'
                         'vllm:prefix_cache_hits_total{engine="0"} 250\n', now=1.0)
    assert (vllm.queries, vllm.hits, vllm.hit_share_since(None)) == (1000.0, 250.0, None)
    assert vllm.hit_share_since(_scrape(0.0, 600, 50)) == pytest.approx(0.5)  # 200 of 400 since
    assert vllm.hit_share_since(_scrape(0.0, 1000, 250)) is None  # no lookups since: nothing to say
    sglang = parse_metrics('sglang:num_running_reqs{tp_rank="0"} 1\nsglang:cache_hit_rate{tp_rank="0"} 0.75\n')
    assert sglang.hit_share_since(None) == 0.75  # SGLang's own recent rate


def test_router_learns_from_the_servers_hit_counters_when_usage_is_silent():
    """vLLM reports cached tokens in usage only with --enable-prompt-tokens-details (off by default):
    its prefix-cache counters between two scrapes say how much it really reused."""
    router, a, b = _router_after_a_window()
    before = router.prefixes.capacity(a.url)
    router.observe_load(a.url, _scrape(2.0, 40_000, 5_000))  # 30k tokens looked up, none hit
    assert router.prefixes.capacity(a.url) < before
    shrunk = router.prefixes.capacity(a.url)
    router.observe_load(a.url, _scrape(3.0, 70_000, 5_000))  # nothing served since: no verdict
    assert router.prefixes.capacity(a.url) == shrunk


def test_usage_reports_take_precedence_over_the_counters():
    router, a, b = _router_after_a_window()
    p = Prefix(turns(3, who="u0"), "s")
    router.order((a, b), "s", "prefix_affinity", p)
    cached = int(4000 * p.predicted[a.url] / p.tokens)
    usage = {"prompt_tokens": 4000, "prompt_tokens_details": {"cached_tokens": cached}}
    router.reused(a.url, p, usage)  # as predicted
    before = router.prefixes.capacity(a.url)
    router.observe_load(a.url, _scrape(2.0, 40_000, 5_000))  # counters say "no hits": others' traffic, say
    assert router.prefixes.capacity(a.url) == before


def test_a_restart_between_scrapes_is_no_verdict_on_the_cache():
    router, a, b = _router_after_a_window()
    router.observe_load(a.url, ServerLoad(0, 0, None, 2.0, started=9.0, queries=500, hits=0))
    assert router.prefixes.held(a.url) == 0  # dropped, as before
    assert router.prefixes.capacity(a.url) == PrefixIndex().capacity(a.url)
