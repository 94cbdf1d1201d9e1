"""Synthetic BNPL data: deterministic for a (seed, as_of) pair, block by block.

Users are generated in blocks of ``BLOCK_USERS``; block ``b`` draws from its own random
stream seeded by ``(seed, b)``, so any block can be (re)generated alone, in any order or
process, with identical rows. Rows come out as CSV text ready for ``COPY ... FROM STDIN``.

Shape of the data: most users place a few orders and a few place many (log-normal counts);
merchants and categories have Zipf-like popularity; about a third of completed orders are
pay-in-4 plans with installments every 14 days; a latent per-user riskiness drives late
payments and defaults, and the risk scores are correlated with it.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate

BLOCK_USERS = 10_000
MAX_USERS = 50_000_000

COUNTRIES = (("US", 30), ("GB", 12), ("DE", 10), ("AE", 9), ("SA", 8), ("FR", 7), ("AU", 6), ("NL", 5),
             ("ES", 5), ("IT", 4), ("SE", 2), ("KW", 2))
CATEGORIES = ("electronics", "fashion", "home", "beauty", "travel", "groceries", "sports", "toys",
              "books", "health", "automotive", "jewelry")
CATEGORY_MEAN_AMOUNT = {"electronics": 420, "fashion": 110, "home": 180, "beauty": 60, "travel": 650,
                        "groceries": 75, "sports": 140, "toys": 55, "books": 35, "health": 70,
                        "automotive": 260, "jewelry": 380}
N_MERCHANTS = 2_000
STATUSES = (("completed", 90), ("pending", 3), ("failed", 5), ("refunded", 2))
INCOME = (("low", 40), ("medium", 45), ("high", 15))
VERIFICATION = (("verified", 80), ("pending", 15), ("rejected", 5))
PLAN_SHARE = 0.35
INSTALLMENT_EVERY_DAYS = 14


def user_id(n: int) -> str:
    """The id of the n-th synthetic user: sorts like n, so id ranges are number ranges."""
    return f"u{n:09d}"


def _cumulative(pairs: tuple[tuple[str, int], ...]) -> tuple[list[str], list[float]]:
    names = [p[0] for p in pairs]
    total = 0.0
    cum = []
    for _, w in pairs:
        total += w
        cum.append(total)
    return names, cum


_COUNTRY = _cumulative(COUNTRIES)
_STATUS = _cumulative(STATUSES)
_INCOME = _cumulative(INCOME)
_VERIFICATION = _cumulative(VERIFICATION)
# Zipf popularity: merchant k has weight 1/(k+1); merchant k sells category k mod |categories|
# with the category order itself skewed (electronics and fashion first).
_MERCHANT_CUM = list(accumulate(1.0 / (k + 1) for k in range(N_MERCHANTS)))
_MERCHANTS = [f"m{k:05d}" for k in range(N_MERCHANTS)]
_MERCHANT_CATEGORY = [CATEGORIES[int(len(CATEGORIES) * (k / N_MERCHANTS) ** 2) % len(CATEGORIES)]
                      if k >= len(CATEGORIES) else CATEGORIES[k] for k in range(N_MERCHANTS)]


def _pick(rng: random.Random, table: tuple[list[str], list[float]]) -> str:
    names, cum = table
    return names[bisect(cum, rng.random() * cum[-1])]


_DAY = 86400


@lru_cache(maxsize=8192)
def _day_text(day: int) -> str:
    return (EPOCH_DATE + timedelta(days=day)).isoformat()


def _ts(epoch: int) -> str:
    """``YYYY-MM-DD HH:MM:SS+00`` for whole epoch seconds (strftime is the generator's hot spot)."""
    day, sec = divmod(epoch, _DAY)
    return f"{_day_text(day)} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}+00"


EPOCH_DATE = date(1970, 1, 1)


@dataclass
class Block:
    """CSV text for each table of one block of users, and its row counts."""

    users: list[str] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    installments: list[str] = field(default_factory=list)
    risk_scores: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.tables().items()}

    def tables(self) -> dict[str, list[str]]:
        return {"users": self.users, "transactions": self.transactions, "installment_plans": self.plans,
                "installments": self.installments, "risk_scores": self.risk_scores}


def generate_block(seed: int, block: int, n_users: int, as_of: datetime) -> Block:
    """Rows for users ``block*BLOCK_USERS`` .. min(next block, n_users) - 1, as of ``as_of`` (UTC)."""
    rng = random.Random(f"{seed}:{block}")
    out = Block()
    now = int(as_of.timestamp())
    today = now // _DAY
    first = block * BLOCK_USERS
    for n in range(first, min(first + BLOCK_USERS, n_users)):
        uid = user_id(n)
        signup_day = today - int(rng.uniform(1, 3 * 365))
        age = max(18, min(80, int(rng.gauss(35, 11))))
        riskiness = rng.betavariate(1.6, 5.0)  # mostly low, a long tail of risky users
        created = min(signup_day * _DAY + int(rng.uniform(0, _DAY - 1)), now)
        out.users.append(
            f"{uid},{age},{_pick(rng, _COUNTRY)},{_day_text(signup_day)},{_pick(rng, _VERIFICATION)},"
            f"{_pick(rng, _INCOME)},{_ts(created)},{_ts(created)}"
        )
        n_orders = int(rng.lognormvariate(1.7, 1.05))
        span = now - created
        late_count = 0
        for k in range(n_orders):
            # Skewed towards recent activity, so velocity windows are populated.
            at = now - int(span * rng.random() ** 2.2)
            merchant_idx = bisect(_MERCHANT_CUM, rng.random() * _MERCHANT_CUM[-1])
            category = _MERCHANT_CATEGORY[merchant_idx]
            amount = round(max(1.0, rng.lognormvariate(_LOG_MEAN[category], 0.6)), 2)
            status = _pick(rng, _STATUS)
            tid = f"t{n:09d}{k:05d}"
            out.transactions.append(
                f"{tid},{uid},{amount:.2f},USD,{_MERCHANTS[merchant_idx]},{category},{status},{_ts(at)}"
            )
            if status == "completed" and rng.random() < PLAN_SHARE:
                late_count += _plan(rng, out, n, k, uid, tid, amount, at, now, riskiness)
        if rng.random() < 0.92:
            def noisy(x: float) -> str:
                return f"{min(1.0, max(0.0, x + rng.gauss(0, 0.05))):.3f}"
            out.risk_scores.append(
                f"{uid},{noisy(0.08 + 0.8 * riskiness)},{noisy(0.01 + 0.35 * riskiness ** 2)},"
                f"{late_count},{noisy(0.92 - 0.5 * riskiness)},{noisy(0.15 + 0.7 * riskiness)},{_ts(now)}"
            )
    return out


_LOG_MEAN = {c: math.log(m) for c, m in CATEGORY_MEAN_AMOUNT.items()}


def _plan(rng: random.Random, out: Block, n: int, k: int, uid: str, tid: str, amount: float,
          at: int, now: int, riskiness: float) -> int:
    """Append a pay-in-4 plan and its installments; return how many were paid late."""
    pid = f"p{n:09d}{k:05d}"
    share = round(amount / 4, 2)
    parts = (share, share, share, round(amount - 3 * share, 2))
    defaults_at = 1 + int(rng.random() * 3) if rng.random() < 0.12 * riskiness else None
    late = 0
    status = "completed"
    today = now // _DAY
    for seq, part in enumerate(parts, start=1):
        due_day = at // _DAY + INSTALLMENT_EVERY_DAYS * (seq - 1)
        paid: int | None
        if defaults_at is not None and seq > defaults_at:
            paid = None
        elif seq == 1:
            paid = at  # the first part is taken at checkout
        elif rng.random() < 0.55 * riskiness:
            paid = (due_day + 1 + int(rng.expovariate(1 / (3 + 25 * riskiness)))) * _DAY + int(
                rng.uniform(0, _DAY - 1))
        else:
            paid = due_day * _DAY - int(rng.uniform(0, 3 * _DAY))
        if paid is not None and paid > now:
            paid = None  # not paid yet: that moment is still in the future
        if paid is not None and paid // _DAY > due_day:
            late += 1
        if paid is None:
            status = "defaulted" if defaults_at is not None and due_day < today - 60 else "active"
        paid_text = _ts(paid) if paid is not None else ""
        # updated_at: the last change of the row (its payment, else the purchase), never now().
        touched = paid_text or _ts(at)
        out.installments.append(f"{pid},{seq},{uid},{_day_text(due_day)},{part:.2f},{paid_text},{touched}")
    out.plans.append(f"{pid},{uid},{tid},{amount:.2f},4,{status},{_ts(at)},{_ts(at)}")
    return late
