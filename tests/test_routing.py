import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmsched.errors import UserError
from llmsched.routers import ROUTERS, make_router


def route_all(name, caps, jobs, seed=0):
    r = make_router(name, caps, seed)
    return r, [r.route(i, p, d) for i, (p, d) in enumerate(jobs)]


def test_round_robin_cycles():
    _, picks = route_all("round-robin", [1, 1, 1], [(10, 10)] * 7)
    assert picks == [0, 1, 2, 0, 1, 2, 0]


def test_jsq_and_least_work_count_what_they_say():
    r = make_router("jsq", [1, 1])
    r.route("a", 5000, 5000)
    assert r.route("b", 1, 1) == 1  # fewer requests, though the work is tiny either way
    assert r.route("c", 1, 1) == 0  # tie on requests: lowest index
    w = make_router("least-work", [1, 1])
    w.route("a", 5000, 0)
    assert [w.route(k, 10, 10) for k in "bcd"] == [1, 1, 1]


def test_resource_aware_divides_by_capacity():
    r = make_router("resource-aware", [1000.0, 3000.0])
    picks = [r.route(i, 100, 100) for i in range(400)]
    # work shares follow capacities: about 1 : 3
    assert picks.count(1) / len(picks) == pytest.approx(0.75, abs=0.01)
    plain = make_router("least-work", [1000.0, 3000.0])
    picks = [plain.route(i, 100, 100) for i in range(400)]
    assert picks.count(1) == 200


def test_settle_returns_the_booking():
    r = make_router("least-work", [1, 1])
    i = r.route("x", 300, 40)
    assert (r.loads[i].requests, r.loads[i].prompt_tokens, r.loads[i].decode_tokens) == (1, 300, 40)
    r.settle("x")
    assert (r.loads[i].requests, r.loads[i].tokens) == (0, 0)
    with pytest.raises(KeyError):
        r.settle("x")


@pytest.mark.parametrize("name", ["random", "power-of-two"])
def test_random_routers_are_seeded(name):
    jobs = [(100, 10)] * 50
    assert route_all(name, [1] * 4, jobs, 7)[1] == route_all(name, [1] * 4, jobs, 7)[1]
    assert route_all(name, [1] * 4, jobs, 7)[1] != route_all(name, [1] * 4, jobs, 8)[1]


def test_unknown_router():
    with pytest.raises(UserError, match="--router"):
        make_router("best", [1])


@given(
    name=st.sampled_from(sorted(ROUTERS)),
    caps=st.lists(st.floats(10, 1e4), min_size=1, max_size=5),
    ops=st.lists(st.tuples(st.booleans(), st.integers(1, 4000), st.integers(1, 500)), max_size=60),
)
def test_bookings_balance(name, caps, ops):
    """Whatever the router: every choice is a replica, and loads equal the sum of open bookings."""
    r = make_router(name, caps, 3)
    open_ = {}
    for k, (settle, p, d) in enumerate(ops):
        if settle and open_:
            key = next(iter(open_))
            r.settle(key)
            del open_[key]
        else:
            i = r.route(k, p, d)
            assert 0 <= i < len(caps)
            open_[k] = (i, p, d)
    for i, load in enumerate(r.loads):
        mine = [v for v in open_.values() if v[0] == i]
        assert load.requests == len(mine)
        assert load.tokens == sum(p + d for _, p, d in mine)


# --- routers that see the prompt's prefix ids ------------------------------------------------------------------------
def conv(c, k):
    """Prefix ids of conversation c's first k blocks (all start with the shared id 0)."""
    return (0, *(100 * c + j for j in range(1, k)))


def test_prefix_affinity_follows_the_longest_cached_prefix():
    r = make_router("prefix-affinity", [1, 1, 1])
    assert r.route("a", 512 * 4, 10, conv(1, 4), 512) == 0  # nothing cached anywhere: least loaded, lowest index
    # matches only the shared id 0 on replica 0 (1 of 11 blocks, under match_rate_threshold 0.1): smallest picture
    assert r.route("b", 512 * 11, 10, conv(2, 11), 512) == 1
    assert r.route("x", 512 * 11, 10, conv(3, 11), 512) == 2
    assert r.route("y", 100, 10, (), 0) == 0  # no ids: the smallest picture (4 ids against 11)
    assert r.route("z", 100, 10, (), 0) == 0  # ... whatever its load
    assert r.route("c", 512 * 6, 10, conv(1, 6), 512) == 0  # conversation 1's next turn: 4 blocks cached on 0
    assert r.route("d", 512 * 12, 10, conv(2, 12), 512) == 1


def test_cache_aware_matches_then_guards_the_load():
    r = make_router("cache-aware", [1, 1])
    assert r.route("a", 4096, 10, conv(1, 8), 512) == 0
    # 3 of 4 blocks matched (0.75 > cache_threshold 0.3): replica 0, though it is busier
    assert r.route("b", 2048, 10, conv(1, 4), 512) == 0
    # only id 0 matched (1 of 8 = 0.125): the replica whose picture is smallest
    assert r.route("c", 4096, 10, conv(2, 8), 512) == 1
    # imbalanced beyond both thresholds (more than 64 apart and 1.5x): least loaded, whatever the match
    for i in range(70):
        r.book(("load", i), 0, 10, 10)
    assert r.route("d", 4096, 10, conv(1, 8), 512) == 1


def test_prefix_score_weighs_prefix_queue_and_kv_as_llm_d():
    r = make_router("prefix-score", [1, 1], cache_tokens=[100_000, 100_000])
    r.route("a", 4096, 0, conv(1, 8), 512)  # all equal: 3 x 0 + 2 x 1 + 2 x 1 on both; a tie drawn at random
    home = r.indexes.index(next(i for i in r.indexes if len(i)))
    other = 1 - home
    # Full match (3), busier queue (0), KV 4096 / 100k used (2 x 0.959) against no match, idle: the match wins.
    assert r.route("b", 4096, 0, conv(1, 8), 512) == home
    # Ten more requests booked at home: its queue score stays 0 and its KV use grows; the match still wins (3 > 2)...
    for i in range(10):
        r.book(("q", i), home, 4096, 0)
    assert r.route("c", 4096, 0, conv(1, 8), 512) == home
    # ...until its KV is full: 3 + 0 + 0 against 0 + 2 + 2
    for i in range(20):
        r.book(("kv", i), home, 4096, 0)
    assert r.route("d", 4096, 0, conv(1, 8), 512) == other


def test_prefix_index_is_lru_bounded_and_evicts_tails_first():
    r = make_router("prefix-affinity", [1, 1], cache_tokens=[512 * 4, 512 * 4])
    r.route("a", 512 * 4, 1, conv(1, 4), 512)  # fills replica 0's picture (4 blocks)
    r.route("b", 512 * 2, 1, conv(2, 2), 512)  # replica 1 (least loaded: tie on the shared id 0)
    r.route("c", 512 * 2, 1, (0, 999), 512)  # id 0 is on both: least loaded... replica 0 again? loads 1 vs 1: 0
    index = r.indexes[0]
    assert len(index) == 4
    # conversation 1's last two ids were evicted (its first ids, refreshed by c's id 0, stay)
    from llmsched.workload.prefix import chain_ids

    assert index.match(chain_ids(conv(1, 4))) == 2


def test_load_routers_take_the_prefix_call_shape():
    for name in ROUTERS:
        r = make_router(name, [1, 1], 0)
        assert r.route("a", 100, 10) in (0, 1)
        assert r.route("b", 100, 10, conv(1, 2), 512) in (0, 1)
