"""Key distributions: seeded, reproducible across Python versions, agent-disjoint."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.agent.keys import KeyStream, Zipf, agent_slice, derive_seed, make_chooser

DISTS = ("uniform", "zipf", "sequential", "hotspot", "latest")


def test_golden_sequences_are_stable_across_pythons():
    # Checked identical on 3.9 and 3.11: a changed value means every old result's key
    # sequence changed too.
    assert derive_seed(1, 0, "keys") == 4637562430409779211
    assert KeyStream(100_000, "uniform", 1, 0, 1).take(5) == [29783, 91138, 65729, 15797, 19576]
    assert KeyStream(100_000, "zipf", 1, 0, 1).take(5) == [2324, 1, 29, 13362, 8305]
    assert KeyStream(100_000, "hotspot", 1, 2, 4).take(5) == [57790, 54923, 68628, 60170, 53025]
    assert KeyStream(100_000, "latest", 1, 0, 1).take(5) == [97676, 0, 99973, 86641, 91699]


@pytest.mark.parametrize("dist", DISTS)
def test_same_seed_same_sequence(dist):
    a = KeyStream(10_000, dist, 7, 3, 8).take(500)
    b = KeyStream(10_000, dist, 7, 3, 8).take(500)
    assert a == b


@pytest.mark.parametrize("dist", ["uniform", "zipf", "hotspot", "latest"])
def test_other_seed_or_agent_differs(dist):
    base = KeyStream(10_000, dist, 7, 0, 2, shared_keys=True).take(200)
    assert KeyStream(10_000, dist, 8, 0, 2, shared_keys=True).take(200) != base
    assert KeyStream(10_000, dist, 7, 1, 2, shared_keys=True).take(200) != base


@pytest.mark.parametrize("dist", DISTS)
def test_agents_draw_from_disjoint_slices_unless_shared(dist):
    agents = 3
    seen = []
    for n in range(agents):
        ks = KeyStream(1000, dist, 1, n, agents)
        keys = set(ks.take(2000))
        assert keys <= set(range(ks.start, ks.stop))
        seen.append(keys)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    shared = [set(KeyStream(1000, "uniform", 1, n, agents, shared_keys=True).take(3000)) for n in range(agents)]
    assert shared[0] & shared[1]


def test_agent_slices_partition_the_range():
    for total, agents in [(10, 3), (7, 7), (100_000, 6), (5, 1)]:
        slices = [agent_slice(total, agents, n) for n in range(agents)]
        assert slices[0][0] == 0 and slices[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))
        assert max(s[1] - s[0] for s in slices) - min(s[1] - s[0] for s in slices) <= 1


def test_too_few_keys_for_the_agents_is_an_error():
    with pytest.raises(ValueError):
        KeyStream(2, "uniform", 1, 2, 3)


@pytest.mark.parametrize("dist", DISTS)
def test_choosers_stay_in_range(dist):
    for n in (1, 2, 17):
        choose = make_chooser(dist, n, random.Random(3))
        assert all(0 <= choose() < n for _ in range(2000))


def test_sequential_walks_and_wraps():
    choose = make_chooser("sequential", 4, random.Random(0))
    assert [choose() for _ in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_zipf_matches_its_distribution():
    n, s, draws = 1000, 1.2, 60_000
    z = Zipf(n, s, random.Random(42))
    counts = Counter(z.rank() for _ in range(draws))
    norm = sum(1 / k ** s for k in range(1, n + 1))
    for k in (1, 2, 3, 10):
        expected = draws / k ** s / norm
        assert abs(counts[k] - expected) < 5 * expected ** 0.5 + 0.01 * expected, (k, counts[k], expected)
    assert min(counts) >= 1 and max(counts) <= n


def test_zipf_exponent_one_and_small():
    for s in (1.0, 0.5, 3.0):
        z = Zipf(50, s, random.Random(1))
        ranks = [z.rank() for _ in range(5000)]
        assert all(1 <= r <= 50 for r in ranks)
        assert Counter(ranks).most_common(1)[0][0] == 1


def test_zipf_exponent_zero_is_uniform():
    choose = make_chooser("zipf", 10, random.Random(1), exponent=0.0)
    counts = Counter(choose() for _ in range(10_000))
    assert len(counts) == 10 and max(counts.values()) < 1300


def test_hotspot_sends_hot_ops_to_hot_keys():
    choose = make_chooser("hotspot", 1000, random.Random(5), hot_fraction=0.1, hot_ops=0.9)
    draws = [choose() for _ in range(20_000)]
    hot = sum(1 for d in draws if d < 100) / len(draws)
    assert 0.88 < hot < 0.92


def test_latest_favours_recent_indices():
    choose = make_chooser("latest", 1000, random.Random(5), exponent=1.5)
    behind = []
    for head in range(5000):
        behind.append((head % 1000 - choose()) % 1000)
    assert Counter(behind).most_common(1)[0][0] == 0
    assert sum(1 for b in behind if b < 10) > len(behind) / 2


def test_uniform_fast_path_matches_the_chooser():
    ks = KeyStream(5000, "uniform", 9, 1, 2)
    assert ks.uniform is not None
    start, width, _ = ks.uniform
    assert (start, start + width) == (ks.start, ks.stop)
    inline = KeyStream(5000, "uniform", 9, 1, 2)
    s, w, rand = inline.uniform
    assert [s + int(rand() * w) for _ in range(100)] == ks.take(100)
    assert KeyStream(5000, "zipf", 9, 1, 2).uniform is None
