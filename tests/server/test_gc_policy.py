"""The server process' collector policy: survivors of a full collection are frozen, and thawed in time."""

import gc
import weakref

import pytest

from server.gc_policy import FreezeSurvivors


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Node:
    def __init__(self):
        self.other = None


def make_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


@pytest.fixture
def policy():
    # The server's own policy is installed in this process too once a test has imported the ASGI
    # application: it would freeze and thaw along with the one under test. Set it aside meanwhile.
    others = [cb for cb in gc.callbacks if isinstance(getattr(cb, "__self__", None), FreezeSurvivors)]
    for cb in others:
        gc.callbacks.remove(cb)
    gc.unfreeze()
    # Only the collections a test asks for: an automatic one in the middle would move the baseline.
    gc.disable()
    gc.collect()
    clock = Clock()
    # Counted whenever the bound asks, unless a test says otherwise (count_every).
    p = FreezeSurvivors(growth=0.25, full_every=600.0, count_every=0.0, clock=clock)
    p.clock_ = clock
    p.install()
    try:
        yield p
    finally:
        p.uninstall()
        gc.enable()
        gc.collect()
        gc.callbacks.extend(others)


def test_a_full_collection_freezes_what_survived_it(policy):
    survivor = Node()
    gc.collect()
    assert gc.get_freeze_count() > 0
    assert policy.baseline >= gc.get_freeze_count() > policy.baseline - 100  # less what died since
    assert not any(o is survivor for o in gc.get_objects())  # frozen objects are not walked


def test_a_cycle_that_dies_while_frozen_is_found_once_the_frozen_objects_grew(policy):
    cycle = make_cycle()
    alive = weakref.ref(cycle)
    gc.collect()  # the cycle is alive here, so it is frozen
    del cycle
    gc.collect()
    assert alive() is not None, "a frozen cycle is not walked by a full collection"

    growth = [[i] for i in range(policy.baseline)]  # twice as many objects now
    gc.collect()  # they survive and are frozen
    assert not policy.scanning_all
    gc.collect()  # the frozen objects still alive are above the bound: the freeze is undone
    assert policy.scanning_all
    gc.collect()  # walks everything
    assert alive() is None
    assert policy.full_scans == 2
    del growth


def test_the_period_forces_a_collection_of_everything(policy):
    cycle = make_cycle()
    alive = weakref.ref(cycle)
    gc.collect()
    del cycle
    policy.clock_.now += 599
    gc.collect()
    assert alive() is not None
    policy.clock_.now += 2
    gc.collect()  # 601 s since the last collection of everything: thawed ...
    gc.collect()  # ... and walked
    assert alive() is None


def test_young_collections_leave_the_freeze_alone(policy):
    gc.collect()
    freezes = policy.freezes
    gc.collect(0)
    gc.collect(1)
    assert policy.freezes == freezes
    assert not policy.scanning_all
    assert gc.get_freeze_count() > 0


def test_uninstalling_thaws_everything(policy):
    gc.collect()
    assert gc.get_freeze_count() > 0
    policy.uninstall()
    assert gc.get_freeze_count() == 0
    assert policy.callback not in gc.callbacks


def test_short_lived_objects_frozen_at_one_collection_do_not_count_once_freed(policy):
    gc.collect()
    transient = [[i] for i in range(policy.baseline)]  # alive at the next collection, then gone
    gc.collect()
    assert gc.get_freeze_count() > 1.9 * policy.baseline
    del transient
    gc.collect()
    assert not policy.scanning_all


def _thaw_with(policy, objects):
    """Freeze ``objects`` with the rest, then let the next full collection walk everything."""
    gc.collect()  # they survive and are frozen
    gc.collect()  # above the bound: thawed
    assert policy.scanning_all


def test_a_walk_of_everything_that_finds_little_garbage_doubles_the_allowed_growth(policy):
    gc.collect()
    live = [[i] for i in range(policy.baseline)]  # a connect storm: growth that stays alive
    _thaw_with(policy, live)
    gc.collect()
    assert policy.growth == 0.5
    live += [[i] for i in range(len(live) * 2)]
    _thaw_with(policy, live)
    gc.collect()
    assert policy.growth == 1.0  # the most it grows


def test_a_walk_that_finds_much_garbage_brings_the_allowed_growth_back(policy):
    gc.collect()
    policy.growth = 1.0
    cycles = [make_cycle() for _ in range(policy.baseline)]  # sockets that will close
    _thaw_with(policy, cycles)
    del cycles
    gc.collect()
    assert policy.growth == 0.25


def test_collections_that_cannot_have_grown_the_frozen_objects_past_the_bound_count_nothing(policy):
    gc.collect()
    counts = policy.counts
    small = [[i] for i in range(policy.baseline // 10)]  # well under a quarter more
    for _ in range(5):
        gc.collect()
    assert policy.counts == counts, "the frozen objects were walked to count them"
    assert policy.freezes >= 6 and not policy.scanning_all
    assert not any(o is small for o in gc.get_objects()), "the survivors were frozen all the same"
    del small


def test_the_bound_follows_what_was_frozen_and_a_count_sets_it_back_to_what_is_alive(policy):
    gc.collect()
    transient = [[i] for i in range(policy.baseline)]  # frozen at the next collection, then freed
    gc.collect()
    assert policy.bound >= policy.baseline + len(transient)
    del transient
    counts = policy.counts
    gc.collect()  # the bound is past the threshold: counted, and what is alive is under it
    assert policy.counts == counts + 1 and not policy.scanning_all
    assert policy.bound < 1.25 * policy.baseline + 1000


def test_counts_are_at_least_count_every_seconds_apart(policy):
    policy.count_every = 5.0
    gc.collect()
    grown = [[i] for i in range(policy.baseline)]  # twice as many objects: past the bound and the threshold
    policy.clock_.now += 1
    gc.collect()
    gc.collect()
    assert policy.counts == 0 and not policy.scanning_all, "counted within count_every of the last count"
    policy.clock_.now += 4
    gc.collect()  # 5 s since the last count: counted, above the threshold, thawed
    assert policy.counts == 1 and policy.scanning_all
    del grown


def test_the_period_thaws_when_neither_the_bound_nor_the_count_interval_would(policy):
    policy.count_every = 1000.0  # no count would be allowed, and nothing grew past the bound
    cycle = make_cycle()
    alive = weakref.ref(cycle)
    gc.collect()
    del cycle
    policy.clock_.now += 601
    gc.collect()  # thawed by the period ...
    gc.collect()  # ... and walked
    assert alive() is None
