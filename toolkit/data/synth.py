"""Deterministic synthetic histories with interest drift: the built-in default data and the test fixture.

World: items are split into domains (each with Zipf popularity inside it); domains have Zipf popularity too.
Each user owns a pool of 10-15 domains and sits in a current one: every click is a not-yet-seen item of the
current domain (popularity-skewed), except that with p_shift the user first moves to another domain of the pool
(drift: the regime the request gate is built for) and with p_noise one click comes from any domain.
History lengths run from 5 to 40, skewed short like real logs. A sequential model learns "stay in the current
domain, prefer its popular items" and clearly beats random ranking; it cannot foresee the shifts.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from toolkit.data.protocol import N_CANDIDATES, track_step
from toolkit.errors import ToolkitError

GENERATOR = "toolkit.synth/1"


@dataclass(frozen=True)
class SynthParams:
    users: int = 2000
    items: int = 1000
    domains: int = 50
    seed: int = 0
    pool_min: int = 10  # domains per user (clipped to `domains`)
    pool_max: int = 15
    min_len: int = 5  # history length: min_len + a truncated exponential with mean ~mean_extra_len
    max_len: int = 40
    mean_extra_len: float = 12.0
    p_shift: float = 0.15  # per click: move to another domain of the pool first
    p_noise: float = 0.05  # per click: this one item comes from any domain (the current domain stays)
    item_zipf: float = 1.1  # popularity exponent inside a domain
    domain_zipf: float = 0.7  # popularity exponent across domains (which domains enter pools)
    generator: str = GENERATOR

    def validate(self) -> None:
        checks = [
            (self.users >= 1, f"--users must be >= 1, got {self.users}"),
            (self.domains >= 1, f"--domains must be >= 1, got {self.domains}"),
            (self.items >= self.domains, f"--items ({self.items}) must be >= --domains ({self.domains})"),
            (1 <= self.pool_min <= self.pool_max, f"pool sizes must satisfy 1 <= {self.pool_min} <= {self.pool_max}"),
            (3 <= self.min_len <= self.max_len, f"history lengths must satisfy 3 <= {self.min_len} <= {self.max_len}"),
            (
                self.items >= self.max_len + N_CANDIDATES - 1,
                f"--items must be >= {self.max_len + N_CANDIDATES - 1} (a {self.max_len}-item history still needs "
                f"{N_CANDIDATES - 1} untouched items as negatives), got {self.items}",
            ),
            (0 <= self.p_shift <= 1 and 0 <= self.p_noise <= 1, "p_shift and p_noise must lie in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ToolkitError(message)

    def sha256(self) -> str:
        """The synthetic dataset's source_sha256: a hash of everything that determines the histories."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass
class SynthWorld:
    """Histories (items 1..items) plus the generator's labels, for drift analysis."""

    histories: list[np.ndarray]  # each [n_u] int64
    item_domain: np.ndarray  # [items + 1], -1 at the padding id 0
    current_domain: np.ndarray  # [n_interactions] the user's sticky domain at each click (CSR order)
    shift: np.ndarray  # [n_interactions] 1 where the user moved domain just before this click
    noise: np.ndarray  # [n_interactions] 1 where the click came from a random domain

    def extras(self) -> dict[str, np.ndarray]:
        return {
            "item_domain": self.item_domain,
            "current_domain": self.current_domain,
            "shift": self.shift,
            "noise": self.noise,
        }


def _zipf(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def generate(params: SynthParams, progress=None) -> SynthWorld:
    """The histories for `params`; a pure function of them (numpy PCG64 streams)."""
    params.validate()
    p = params
    rng = np.random.default_rng([p.seed, 0x53594E])  # distinct stream from the protocol's SeedSequence(seed)
    domain_items = np.array_split(rng.permutation(p.items).astype(np.int64) + 1, p.domains)  # popularity order
    item_domain = np.full(p.items + 1, -1, dtype=np.int64)
    for d, members in enumerate(domain_items):
        item_domain[members] = d
    cdfs = [np.cumsum(_zipf(len(m), p.item_zipf)) for m in domain_items]
    domain_weight = _zipf(p.domains, p.domain_zipf)[rng.permutation(p.domains)]
    support = np.arange(p.min_len, p.max_len + 1)
    length_p = np.exp(-(support - p.min_len) / max(p.mean_extra_len, 1e-9))
    lengths = rng.choice(support, size=p.users, p=length_p / length_p.sum())
    pool_sizes = np.minimum(rng.integers(p.pool_min, p.pool_max + 1, size=p.users), p.domains)
    # Pools: weighted sampling without replacement for all users at once (Gumbel top-k), most likely first.
    gumbel_keys = np.log(domain_weight) + rng.gumbel(size=(p.users, p.domains))  # [users, domains]
    pools = np.argsort(-gumbel_keys, axis=1, kind="stable")

    members = [m.tolist() for m in domain_items]  # python lists: per-click work stays in cheap scalar code
    cdf_lists = [c.tolist() for c in cdfs]
    histories, current, shifts, noises = [], [], [], []
    with track_step(progress, "generating synthetic users", total=p.users) as advance:
        for u in range(p.users):
            pool = pools[u, : pool_sizes[u]].tolist()
            h, c, s, z = _user_history(rng, int(lengths[u]), pool, members, cdf_lists, p)
            histories.append(h)
            current.append(c)
            shifts.append(s)
            noises.append(z)
            if u % 256 == 255:
                advance(256)
    cat = lambda xs: np.concatenate(xs).astype(np.int64)  # noqa: E731
    return SynthWorld(histories, item_domain, cat(current), cat(shifts), cat(noises))


def _user_history(rng, n: int, pool: list[int], members: list[list[int]], cdfs: list[list[float]], p: SynthParams):
    """One user's n clicks: (items, current domain, shift flag, noise flag), each [n]."""
    draws = rng.random((n, 5)).tolist()  # per click: shift?, noise?, shift target, noise domain, item
    touched: set[int] = set()
    items, current, shift, noise = [], [], [], []
    cur = pool[int(draws[0][2] * len(pool))]  # the first click never shifts, so its target uniform is free
    for i in range(n):
        u_shift, u_noise, u_target, u_random_domain, u_item = draws[i]
        moved = i > 0 and len(pool) > 1 and u_shift < p.p_shift
        if moved:
            others = [d for d in pool if d != cur]
            cur = others[int(u_target * len(others))]
        is_noise = u_noise < p.p_noise
        d = int(u_random_domain * p.domains) if is_noise else cur
        item = _draw(rng, u_item, members[d], cdfs[d], touched)
        if item is None and is_noise:  # the random domain is used up: take the click from the current one
            is_noise = False
            item = _draw(rng, u_item, members[cur], cdfs[cur], touched)
        if item is None:  # the current domain is used up: the user has to move
            free = [x for x in pool if _has_free(members[x], touched)]
            if not free:
                free = [x for x in range(p.domains) if _has_free(members[x], touched)]
            cur, moved = free[int(rng.integers(len(free)))], True
            item = _draw(rng, u_item, members[cur], cdfs[cur], touched)
        touched.add(item)
        items.append(item)
        current.append(cur)
        shift.append(int(moved))
        noise.append(int(is_noise))
    return (np.asarray(a, dtype=np.int64) for a in (items, current, shift, noise))


def _has_free(members: list[int], touched: set[int]) -> bool:
    return any(x not in touched for x in members)


def _draw(rng, u: float, members: list[int], cdf: list[float], touched: set[int], tries: int = 8) -> int | None:
    """A not-yet-touched item of a domain by popularity (Zipf draws, then the most popular one left)."""
    item = members[min(bisect.bisect_right(cdf, u), len(members) - 1)]
    if item not in touched:
        return item
    for r in rng.random(tries).tolist():
        item = members[min(bisect.bisect_right(cdf, r), len(members) - 1)]
        if item not in touched:
            return item
    return next((x for x in members if x not in touched), None)


def synthesize(
    out,
    users: int = 2000,
    items: int = 1000,
    domains: int = 50,
    seq_len: int = 10,
    seed: int = 0,
    force: bool = False,
    progress=None,
    **overrides,
):
    """Generator parameters -> dataset dir (same protocol and on-disk form as real data, format "synthetic")."""
    from toolkit.data.store import check_output, save_dataset

    params = SynthParams(users=users, items=items, domains=domains, seed=seed, **overrides)
    params.validate()
    if seq_len < 1:
        raise ToolkitError(f"--seq-len must be >= 1, got {seq_len}")
    check_output(out, force)
    world = generate(params, progress)
    meta_extra = {
        "format": "synthetic",
        "source": f"synthetic:{GENERATOR}",
        "source_sha256": params.sha256(),
        "min_user_count": params.min_len,
        "dropped_users": 0,
        "dropped_users_detail": {"fewer_than_3_items": 0, "below_min_user_count": 0},
        "synthetic": asdict(params),
        "synthetic_stats": {
            "shift_rate": round(float(world.shift.mean()), 4),
            "noise_rate": round(float(world.noise.mean()), 4),
            "items_used": int(np.unique(np.concatenate(world.histories)).size),
        },
    }
    return save_dataset(
        out, world.histories, meta_extra, seq_len, seed, force,
        n_items=params.items, extras=world.extras(), progress=progress,
    )  # fmt: skip


LOG_GENERATOR = "toolkit.synthlog/1"


def synth_log(
    path, users: int, items: int | None = None, domains: int | None = None, seed: int = 0,
    mean_len: float = 12.0, p_shift: float = 0.15, p_noise: float = 0.05, progress=None,
) -> dict:
    """A raw interaction log (CSV `user_id,item_id,timestamp`, time-ordered) for large-scale prepare/train tests.

    Vectorised (about 1 s per million interactions), unlike `generate`: users click along a sticky domain that
    shifts with p_shift per click, items Zipf-popular inside a domain, a p_noise click from any domain; repeats of
    an item are allowed (as in real logs); 15% of users have fewer than 5 clicks (so --min-user-count has work).
    Raw ids are sparse (item id = 1000 + 7 * index) so prepare's re-indexing is exercised. Returns summary stats.
    """
    from toolkit.io import atomic_write_bytes

    items = items or max(1000, users // 10)
    domains = domains or max(10, items // 200)
    if users < 1 or items < domains or domains < 1 or mean_len < 1:
        raise ToolkitError("synth log needs --users >= 1, --items >= --domains >= 1")
    rng = np.random.default_rng([seed, 0x4C4F47])
    with track_step(progress, f"generating {users:,} users' log", total=4) as advance:
        lengths = np.where(rng.random(users) < 0.15, rng.integers(1, 5, users),
                           5 + rng.geometric(1.0 / max(mean_len - 4.0, 1.0), users) - 1).astype(np.int64)
        lengths = np.minimum(lengths, 200)
        n = int(lengths.sum())
        user = np.repeat(np.arange(users, dtype=np.int64), lengths)
        start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        first = np.arange(n, dtype=np.int64) == start
        shift = (rng.random(n) < p_shift) | first
        segment = np.cumsum(shift) - 1  # one sticky domain per segment
        domain_w = _zipf(domains, 0.7)[rng.permutation(domains)]
        seg_domain = rng.choice(domains, size=int(segment[-1]) + 1, p=domain_w)
        dom = seg_domain[segment]
        noise = rng.random(n) < p_noise
        dom[noise] = rng.integers(0, domains, int(noise.sum()))
        advance(1)
        members = np.array_split(rng.permutation(items).astype(np.int64), domains)
        sizes = np.array([m.size for m in members])
        cdf = np.concatenate([np.cumsum(_zipf(s, 1.1)) + d for d, s in enumerate(sizes)])  # domain d in (d, d+1]
        cdf[np.cumsum(sizes) - 1] = np.arange(1, domains + 1)  # exact upper ends: no rounding past a domain
        flat = np.concatenate(members)
        item = flat[np.minimum(np.searchsorted(cdf, dom + rng.random(n), side="right"), flat.size - 1)]
        advance(1)
        t0 = 1_400_000_000 + rng.integers(0, 200_000_000, users)
        gaps = rng.integers(1, 86_400, n)
        gaps[first] = 0
        # per-user running time: t0 + cumulative gaps inside the user
        csum = np.cumsum(gaps)
        ts = np.repeat(t0, lengths) + csum - np.repeat(csum[start[first]], lengths)  # gaps[first] = 0
        order = np.argsort(ts, kind="stable")
        advance(1)
        body = _csv_bytes(user[order] + 1, 1000 + 7 * item[order], ts[order])
        atomic_write_bytes(path, body)
        advance(1)
    return {"generator": LOG_GENERATOR, "users": users, "items": items, "domains": domains, "seed": seed,
            "interactions": n, "bytes": len(body)}


def _csv_bytes(user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> bytes:
    """`user_id,item_id,timestamp` CSV of integer columns, fast (pyarrow's writer, not a Python loop)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table({"user_id": user, "item_id": item, "timestamp": ts})
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="none"))
    return sink.getvalue().to_pybytes()
