"""Seeded key choice: which key (or bitmap row/column) each op touches.

Everything here is pure and deterministic: the same (seed, agent, stream) always yields the
same sequence on every supported Python, because we only draw ``Random.random()`` (Mersenne
Twister, stable across versions) and never ``randrange``/``choice`` (whose algorithms have
changed between releases). A chooser is a zero-argument callable returning an index in
``[0, n)``; callers add their own offset, so the hot path is one call per op.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Callable

Chooser = Callable[[], int]


def derive_seed(seed: int, agent_num: int, stream: str) -> int:
    """A 64-bit seed for one agent's named random stream.

    Hashing (rather than ``seed + agent_num``) keeps agent 1 of seed 1 from replaying agent 0
    of seed 2, and separate streams keep e.g. the GET/SET coin from shifting the key sequence
    when a ratio changes.
    """
    digest = hashlib.sha256(f"fleetbench/{seed}/{agent_num}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(seed: int, agent_num: int, stream: str) -> random.Random:
    return random.Random(derive_seed(seed, agent_num, stream))


def agent_slice(total: int, agents: int, agent_num: int) -> tuple[int, int]:
    """Agent ``agent_num``'s contiguous share ``[start, stop)`` of ``range(total)``.

    Shares differ by at most one, so the union over all agents is exactly ``range(total)``
    with no overlap: "keyspace" stays the number of distinct keys however many agents run.
    """
    base, extra = divmod(total, agents)
    start = agent_num * base + min(agent_num, extra)
    return start, start + base + (1 if agent_num < extra else 0)


class Zipf:
    """Zipf(n, s) ranks 1..n in O(1) time and memory: rejection-inversion sampling.

    W. Hormann and G. Derflinger, "Rejection-inversion to generate variates from monotone
    discrete distributions" (1996); this follows Apache Commons RNG's
    RejectionInversionZipfSampler. A CDF table would need O(n) memory, and keyspaces of
    10^8 keys are legitimate. Rank 1 is the most frequent.
    """

    def __init__(self, n: int, exponent: float, rng: random.Random) -> None:
        if n < 1:
            raise ValueError("zipf needs n >= 1")
        if exponent <= 0:
            raise ValueError("zipf needs exponent > 0")
        self.n = n
        self.s = exponent
        self._random = rng.random
        self._h_x1 = self._h_integral(1.5) - 1.0
        self._h_n = self._h_integral(n + 0.5)
        self._shortcut = 2.0 - self._h_integral_inverse(self._h_integral(2.5) - self._h(2.0))

    @staticmethod
    def _helper1(x: float) -> float:  # log1p(x) / x, stable near 0
        return math.log1p(x) / x if abs(x) > 1e-8 else 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))

    @staticmethod
    def _helper2(x: float) -> float:  # expm1(x) / x, stable near 0
        return math.expm1(x) / x if abs(x) > 1e-8 else 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))

    def _h(self, x: float) -> float:
        return math.exp(-self.s * math.log(x))

    def _h_integral(self, x: float) -> float:
        log_x = math.log(x)
        return self._helper2((1.0 - self.s) * log_x) * log_x

    def _h_integral_inverse(self, x: float) -> float:
        t = x * (1.0 - self.s)
        if t < -1.0:
            t = -1.0  # guards rounding at the boundary
        return math.exp(self._helper1(t) * x)

    def rank(self) -> int:
        n = self.n
        while True:
            u = self._h_n + self._random() * (self._h_x1 - self._h_n)
            x = self._h_integral_inverse(u)
            k = int(x + 0.5)
            if k < 1:
                k = 1
            elif k > n:
                k = n
            if k - x <= self._shortcut or u >= self._h_integral(k + 0.5) - self._h(k):
                return k


def make_chooser(
    distribution: str,
    n: int,
    rng: random.Random,
    exponent: float = 1.01,
    hot_fraction: float = 0.2,
    hot_ops: float = 0.8,
) -> Chooser:
    """A callable drawing indices in ``[0, n)`` by ``distribution``.

    - uniform: every index equally likely.
    - zipf: index 0 hottest, ``P(i) ~ 1/(i+1)^exponent`` (exponent 0 degrades to uniform).
    - sequential: 0, 1, ..., n-1, 0, ... (deterministic, no randomness).
    - hotspot: ``hot_ops`` of draws go uniformly to the first ``hot_fraction`` of indices.
    - latest: zipf by recency behind a head that advances one index per draw, so the hot
      set slides through the range (YCSB's "latest" for a workload that keeps writing).
    """
    if n < 1:
        raise ValueError("a key range needs at least one key")
    rand = rng.random
    # A zipf of exponent 0 is uniform (over ranks, or over recency for "latest").
    if distribution == "uniform" or (distribution in ("zipf", "latest") and exponent <= 0):

        def uniform() -> int:
            return int(rand() * n)

        return uniform
    if distribution == "zipf":
        zipf_rank = Zipf(n, exponent, rng).rank

        def zipf() -> int:
            return zipf_rank() - 1

        return zipf
    if distribution == "sequential":
        state = [-1]

        def sequential() -> int:
            state[0] = i = (state[0] + 1) % n
            return i

        return sequential
    if distribution == "hotspot":
        hot = min(n, max(1, int(n * hot_fraction)))
        cold = n - hot

        def hotspot() -> int:
            if cold == 0 or rand() < hot_ops:
                return int(rand() * hot)
            return hot + int(rand() * cold)

        return hotspot
    if distribution == "latest":
        latest_rank = Zipf(n, exponent, rng).rank
        head = [-1]

        def latest() -> int:
            head[0] = h = (head[0] + 1) % n
            return (h - (latest_rank() - 1)) % n

        return latest
    raise ValueError(f"unknown distribution {distribution!r}")


class KeyStream:
    """The key indices one agent touches: a seeded chooser over this agent's share.

    With ``shared_keys`` every agent draws from the whole ``range(keyspace)``; otherwise agent
    N draws only from its own contiguous slice (``agent_slice``), so agents never collide and
    the union of all agents' keys is still exactly ``keyspace`` keys.
    """

    def __init__(
        self,
        keyspace: int,
        distribution: str,
        seed: int,
        agent_num: int,
        agents: int,
        shared_keys: bool = False,
        exponent: float = 1.01,
        hot_fraction: float = 0.2,
        hot_ops: float = 0.8,
        stream: str = "keys",
    ) -> None:
        if shared_keys:
            self.start, self.stop = 0, keyspace
        else:
            self.start, self.stop = agent_slice(keyspace, agents, agent_num)
        if self.stop <= self.start:
            raise ValueError(f"keyspace {keyspace} is too small to give each of {agents} agents its own keys")
        rng = rng_for(seed, agent_num, stream)
        self._choose = make_chooser(distribution, self.stop - self.start, rng, exponent, hot_fraction, hot_ops)
        # (start, width, random) when draws are uniform, so hot loops can inline the draw
        # (``start + int(random() * width)``, exactly what the chooser does).
        self.uniform: tuple[int, int, Callable[[], float]] | None = (
            (self.start, self.stop - self.start, rng.random) if distribution == "uniform" else None)
        start = self.start
        choose = self._choose

        def next_index() -> int:
            return start + choose()

        self.next_index: Chooser = next_index

    def take(self, count: int) -> list:
        """The next ``count`` indices (for tests and reports)."""
        return [self.next_index() for _ in range(count)]
