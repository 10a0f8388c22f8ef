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
