"""Day-by-day dynamics of one chunk of accounts, vectorized across accounts with numpy.

Each account carries latent drivers (breadth, power use, team growth, quota consumption,
pricing intent, raw volume, engagement trend). Every simulated day:

1. the observable recent behaviour (30/14-day roll-ups of the events already emitted, the
   quota usage of the last and current calendar month, seats and users) is turned into
   hazards: expansion, churn, downgrade, contraction, reactivation, trial conversion;
2. on the first day of a month the true 60-day expansion probability is recorded from those
   hazards (state strictly before the month start: the point-in-time rule of the contract);
3. subscription changes and outreach are drawn and applied;
4. users leave and join (joiners are active from the next day), events are drawn as Poisson
   counts per (account, event type) and expanded with `np.repeat`;
5. the day's events update the roll-ups and the quota usage.

Only observable behaviour drives the expansion hazard, so a model built from the written
tables can in principle recover it. The `volume` driver inflates a single plain feature and
never enters a hazard: heavy but narrow use carries no expansion signal by construction.
The simulation starts one warm-up month before the configured start so that the first as_of
already has a month of history (see `Timeline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from training.simulator import catalog as cat
from training.simulator.treatment import EFFECT_RULE_SETS, EffectRules

DAY_US = 86_400_000_000
SECOND_US = 1_000_000
NEVER = np.int32(2**30)  # "day" of a deactivation that never happens

# Status codes of the state machine (PENDING = account not created yet).
PENDING, TRIALING, ACTIVE, CANCELED = 0, 1, 2, 3
# Change codes written to subscriptions (see DATA_CONTRACT "Derived facts").
KIND_UPGRADE, KIND_EXPANSION = 1, 2

# --- Hazard parameters. Daily hazards are monthly rates / 30. -----------------------------
EXPANSION_BASE_MONTHLY = np.array([0.0036, 0.0038, 0.004])  # per segment, before multipliers
QUOTA_HIGH_MULT = 8.0  # >= 85% of a monthly limit
QUOTA_MID_MULT = 1.5  # 60-85%
POWER_MULT = 4.0  # 3+ power-feature events in 14 days
TEAM_MULT = 3.5  # 2+ users added in 30 days, or more users than seats
BREADTH_MULTS = (0.15, 0.6, 3.0, 7.0)  # <= 1, 2-3, 4-5, 6+ product features in 30 days
PRICING_MULTS = (1.0, 3.0, 6.0)  # 0, 1-2, 3+ pricing-page views in 30 days
PAYWALL_MULT = 1.8  # 2+ paywall hits in 30 days
# Contacted (not holdout) in the last 45 days: the hazard is multiplied by the touch's factor,
# which the configured effect rules give from the account's state (training.simulator.treatment).
OUTREACH_EFFECT_DAYS = 45
OUTREACH_COOLDOWN_DAYS = 60
POST_UPSELL_DAYS = 90  # follow-up window; no new expansion inside it
ADOPTION_BLOCK_DAYS = 45  # non-adopters leave the new tier's features alone this long
REVERSAL_90D_ADOPTER = 0.02
REVERSAL_90D_NON_ADOPTER = 0.17
QUOTA_FORCED_MULT = 1.8

USAGE_SD, USAGE_DAYS = 0.35, 120  # stationary sd and time scale of the usage fluctuation
USAGE_GROWTH_MONTHLY = 0.01
POWER_SD, POWER_DAYS = 0.3, 60
ADOPTION_TURNOVER = 1 / 150  # daily rate at which feature adoption is re-decided
DEPARTURE_MONTHLY = 0.02  # per user

HOUR_BINS = 4096
LOCAL_HOUR_PROFILE = np.array(
    [0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.4, 0.7, 1.0, 1.2, 1.25, 1.15,
     1.0, 1.1, 1.2, 1.15, 1.0, 0.8, 0.6, 0.5, 0.45, 0.4, 0.3, 0.2]
)  # fmt: skip
USER_WEEKDAY = np.array([1.228, 1.228, 1.228, 1.228, 1.228, 0.43, 0.43])  # mean 1 over a week
MACHINE_WEEKDAY = np.array([1.1, 1.1, 1.1, 1.1, 1.1, 0.75, 0.75])
ACTIVITY_SCALE = 0.08  # user-level events per unit weight per active user^0.5 per day


@dataclass(frozen=True)
class Timeline:
    """The simulated days: a warm-up month, then the window the truth is recorded for.

    Day 0 is the first day of the warm-up month (the month before `start`). Its events and
    contract changes are written like any other, so that the first as_of in the window has a
    full month of observable history behind it; only the truth skips it.
    """

    start_us: int  # day 0 (warm-up start), microseconds since the epoch
    n_days: int
    weekday: np.ndarray
    month_start_days: np.ndarray  # all month starts, warm-up included
    truth_start_day: int  # the window's first day (config.start)

    @classmethod
    def build(cls, start: date, months: int) -> Timeline:
        def month(k: int) -> date:  # the first day of the k-th month after start
            m = start.month - 1 + k
            return date(start.year + m // 12, m % 12 + 1, 1)

        first = month(-1)
        month_starts = [(month(k) - first).days for k in range(-1, months)]
        n_days = (month(months) - first).days
        epoch_days = (first - date(1970, 1, 1)).days
        return cls(
            start_us=epoch_days * DAY_US,
            n_days=n_days,
            weekday=(first.weekday() + np.arange(n_days)) % 7,
            month_start_days=np.array(month_starts, dtype=np.int64),
            truth_start_day=(start - first).days,
        )


def _hour_tables() -> np.ndarray:
    """Inverse-CDF lookup of the UTC hour per region (rows 0-3) and for machines (row 4)."""
    rows = []
    for offset in cat.REGION_UTC_OFFSET_HOURS:
        weights = LOCAL_HOUR_PROFILE[(np.arange(24) + offset) % 24]
        rows.append(weights)
    rows.append(np.ones(24))
    table = np.empty((len(rows), HOUR_BINS), dtype=np.int64)
    grid = (np.arange(HOUR_BINS) + 0.5) / HOUR_BINS
    for i, w in enumerate(rows):
        cdf = np.cumsum(w) / w.sum()
        table[i] = np.minimum(np.searchsorted(cdf, grid), 23)
    return table


HOUR_TABLE = _hour_tables()
MACHINE_PROFILE = len(cat.REGIONS)

# --- Catalog as lookup arrays ----------------------------------------------------------------
E = len(cat.EVENTS)
NF = len(cat.PRODUCT_FEATURES)
_FEATURE_POS = {f: i for i, f in enumerate(cat.FEATURES)}
EV_FEATURE = np.array([_FEATURE_POS[e.feature] for e in cat.EVENTS])
EV_WEIGHT = np.array([e.weight for e in cat.EVENTS])
EV_POWER = np.array([e.power for e in cat.EVENTS])
EV_MIN_TIER = np.array([e.min_tier for e in cat.EVENTS])
EV_ACCOUNT_LEVEL = np.array([e.account_level for e in cat.EVENTS])
EV_PREMIUM = EV_MIN_TIER >= 2
IX = cat.EVENT_INDEX
VOLUME_EVENT_IDS = np.array([IX[e] for e in cat.VOLUME_EVENTS])
LIMITS = np.array([cat.QUOTA_LIMITS[m] for m in cat.QUOTA_METRICS]).T  # [tier-1, metric]
# Usage scale per tier: the top tier's limits are huge, so its absolute usage is sized like a
# large business account instead of as a share of the limit.
USAGE_SCALE = LIMITS.copy()
USAGE_SCALE[3] = LIMITS[2] * 2
BASE_MRR = np.array([p.base_mrr for p in cat.PLANS])
SEAT_MRR = np.array([p.seat_mrr for p in cat.PLANS])

# Columns of the rolling observables: one per product feature, then these.
K_POWER, K_PRICING, K_PAYWALL, K_SUPPORT, K_EXPORT, K_PREMIUM, K_ADDED = range(NF, NF + 7)
K = NF + 7
_M = np.zeros((E, K), dtype=np.float32)
for _i, _e in enumerate(cat.EVENTS):
    if EV_FEATURE[_i] < NF:
        _M[_i, EV_FEATURE[_i]] = 1
    _M[_i, K_POWER] = _e.power
    _M[_i, K_PRICING] = _e.signal == "pricing_page"
    _M[_i, K_PAYWALL] = _e.signal == "paywall"
    _M[_i, K_SUPPORT] = _e.signal == "support"
    _M[_i, K_EXPORT] = _e.signal == "export"
EVENT_TO_OBSERVABLE = _M
FEATURE_FLOOR = np.zeros(E)
for _name, _floor in (
    ("task_updated", 0.1),
    ("dashboard_viewed", 0.1),
    ("comment_added", 0.1),
    ("report_generated", 0.1),
    ("cohort_analysis_run", 0.05),
    ("role_permissions_changed", 0.06),
):
    FEATURE_FLOOR[cat.EVENT_INDEX[_name]] = _floor
# Per tier (row = tier - 1): which events the plan includes, and the rate factor of each
# (events above the tier can only be tried).
AVAIL_BY_TIER = np.arange(1, cat.N_TIERS + 1)[:, None] >= EV_MIN_TIER[None, :]
GATE_BY_TIER = np.where(AVAIL_BY_TIER, 1.0, 0.12)
FI = {name: i for i, name in enumerate(cat.FEATURES)}
EVENT_FEATURE_ONEHOT = np.zeros((E, len(cat.FEATURES)), dtype=np.int64)
EVENT_FEATURE_ONEHOT[np.arange(E), EV_FEATURE] = 1


RENEWAL_DAYS = 30  # contract renewal period for `upgrades_at_renewal`


def list_price(tier: np.ndarray, seats: np.ndarray) -> np.ndarray:
    """Monthly price of a plan tier with a number of seats (the subscription's mrr)."""
    return BASE_MRR[tier - 1] + SEAT_MRR[tier - 1] * seats


def _loguniform(rng: np.random.Generator, bounds: np.ndarray) -> np.ndarray:
    lo, hi = np.log(bounds[:, 0]), np.log(bounds[:, 1])
    return np.exp(lo + (hi - lo) * rng.random(len(bounds)))


class _Growable:
    """Column arrays that grow by doubling (users are appended during the simulation)."""

    def __init__(self, dtypes: dict[str, type], capacity: int) -> None:
        self.n = 0
        self.cols = {k: np.zeros(max(capacity, 16), dtype=t) for k, t in dtypes.items()}

    def append(self, **values: np.ndarray) -> np.ndarray:
        m = len(next(iter(values.values())))
        if self.n + m > len(next(iter(self.cols.values()))):
            new_cap = max(2 * (self.n + m), 16)
            for k, arr in self.cols.items():
                grown = np.zeros(new_cap, dtype=arr.dtype)
                grown[: self.n] = arr[: self.n]
                self.cols[k] = grown
        for k, v in values.items():
            self.cols[k][self.n : self.n + m] = v
        idx = np.arange(self.n, self.n + m)
        self.n += m
        return idx

    def __getitem__(self, key: str) -> np.ndarray:
        return self.cols[key][: self.n]


class _Records:
    """Rows collected during the simulation, as lists of arrays concatenated at the end."""

    def __init__(self, *names: str) -> None:
        self.parts: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def add(self, **cols: np.ndarray) -> None:
        for k, v in cols.items():
            self.parts[k].append(np.asarray(v))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64))
            for k, v in self.parts.items()
        }


@dataclass
class ChunkResult:
    """Everything one chunk produced, as numpy columns keyed by chunk-local account index."""

    accounts: dict[str, np.ndarray]
    users: dict[str, np.ndarray]
    subscriptions: dict[str, np.ndarray]
    events: dict[str, np.ndarray]  # user = -1 for account-level events
    outreach: dict[str, np.ndarray]
    expansion_truth: dict[str, np.ndarray]
    post_upsell_truth: dict[str, np.ndarray]


@dataclass
class _Observed:
    """Observable recent behaviour of every account, strictly before the current day."""

    util: np.ndarray
    breadth: np.ndarray
    power14: np.ndarray
    pricing30: np.ndarray
    paywall30: np.ndarray
    team: np.ndarray
    support30: np.ndarray
    export30: np.ndarray
    premium30: np.ndarray
    factor: np.ndarray  # product of the expansion multipliers


class ChunkSimulation:
    """Simulates `n` accounts over the timeline; `run()` returns their rows."""

    def __init__(
        self,
        n: int,
        timeline: Timeline,
        rng: np.random.Generator,
        effects: EffectRules | None = None,
        *,
        outreach: bool = True,
        upgrades_at_renewal: bool = False,
    ) -> None:
        self.n, self.tl, self.rng = n, timeline, rng
        # What a touch does (training.simulator.treatment); draws no random numbers.
        self.effects = effects or EFFECT_RULE_SETS["constant"]
        # Shapes of other datasets (see SimulationConfig): no upsell touches at all, and tier
        # upgrades only on a monthly renewal day (seats can still be added any day).
        self.outreach_on, self.upgrades_at_renewal = outreach, upgrades_at_renewal
        self.renewal_today = np.zeros(n, dtype=bool)
        self._init_accounts()
        self._init_users()

    # ----------------------------------------------------------------- initial state
    def _init_accounts(self) -> None:
        n, rng, tl = self.n, self.rng, self.tl
        seg = rng.choice(3, n, p=cat.SEGMENT_SHARE)
        self.segment = seg
        self.region = rng.choice(len(cat.REGIONS), n, p=cat.REGION_SHARE)
        self.industry = rng.integers(0, len(cat.INDUSTRIES), n)
        self.csm = rng.integers(0, len(cat.CSM_OWNERS), n)
        self.employees = np.round(_loguniform(rng, np.array(cat.SEGMENT_EMPLOYEES)[seg]))
        self.name_parts = rng.integers(0, 1 << 30, (n, 3))
        # Most accounts signed up before the window (tenure up to 5 years); the rest during it.
        pre = rng.random(n) < 0.8
        self.created_day = np.where(
            pre,
            -np.floor(20 + 1800 * rng.random(n) ** 1.5).astype(np.int64),
            rng.integers(0, max(tl.n_days - 20, 1), n),
        )
        secs = (HOUR_TABLE[self.region, rng.integers(0, HOUR_BINS, n)] * 3600) + rng.integers(
            0, 3600, n
        )
        # Sign-ups happen before 20:00 UTC so that the first users join the same day.
        secs = np.where(secs >= 20 * 3600, secs - 12 * 3600, secs)
        self.created_us = tl.start_us + self.created_day * DAY_US + secs * SECOND_US
        self.trial_days = np.where(seg == 0, 14, 30)
        # Half of enterprise sign-ups are sales-led: no trial.
        self.has_trial = ~((seg == 2) & (rng.random(n) < 0.5))
        self.trial_end_day = np.where(self.has_trial, self.created_day + self.trial_days, -(10**9))

        u = rng.random(n)
        cdf = np.cumsum(cat.SEGMENT_TIER_MIX, axis=1)[seg]
        self.tier = np.minimum((u[:, None] > cdf).sum(1), 3).astype(np.int64) + 1
        seats = np.round(_loguniform(rng, np.array(cat.SEGMENT_SEATS, dtype=float)[seg]))
        # New sign-ups start small and grow into their plan.
        seats = np.where(pre, seats, np.maximum(1, np.round(seats * rng.uniform(0.2, 0.5, n))))
        self.seats = seats.astype(np.int64)
        self.initial_users = np.maximum(1, np.round(self.seats * rng.uniform(0.55, 1.0, n))).astype(
            np.int64
        )

        # Latent drivers.
        # Drivers wander around an account-specific level (Ornstein-Uhlenbeck in log space), so
        # an account's behaviour persists for months while the population stays stationary.
        self.breadth_level = rng.beta(2.0, 2.5, n)
        self.breadth_latent = self.breadth_level.copy()
        # Power use, team growth and buying intent are bimodal: a minority of accounts has
        # power users, a growing team or is shopping; the rest barely show the behaviour.
        self.log_power_level = np.where(
            rng.random(n) < 0.22, rng.normal(1.0, 0.4, n), rng.normal(-1.6, 0.7, n)
        )
        self.log_power_dev = rng.normal(0, POWER_SD, n)
        self.team_growth = cat.SEGMENT_TEAM_GROWTH[seg] * np.where(
            rng.random(n) < 0.25, np.exp(rng.normal(1.0, 0.3, n)), np.exp(rng.normal(-1.0, 0.5, n))
        )
        self.log_intent_mean = np.where(
            rng.random(n) < 0.2, rng.normal(0.2, 0.4, n), rng.normal(-2.2, 0.7, n)
        )
        self.log_intent = self.log_intent_mean + rng.normal(0, 0.4, n)
        self.volume = np.exp(rng.normal(1.2, 1.5, n))
        self.volume_event = VOLUME_EVENT_IDS[rng.integers(0, len(VOLUME_EVENT_IDS), n)]
        self.engagement = np.exp(rng.normal(0, 0.35, n))
        self.trend = rng.normal(0.0, 0.03, n)  # monthly log-growth of activity
        # Absolute monthly usage per quota metric: a level sized against the starting plan,
        # times a slow fluctuation. Accounts drift into their quota, upgrade (the limits jump
        # tenfold) and get headroom again.
        util0 = np.exp(rng.normal(np.log(0.4), 0.5, (n, 2)))
        self.log_usage_level = np.log(util0 * USAGE_SCALE[self.tier - 1])
        self.log_usage_dev = rng.normal(0, USAGE_SD, (n, 2))
        self.adopted = np.ones((n, len(cat.FEATURES)), dtype=bool)
        self.adopted[:, :NF] = rng.random((n, NF)) < self._adoption_share()
        self.adopted[:, 0] = True  # every account manages projects

        # Dynamic state.
        self.status = np.full(n, PENDING, dtype=np.int64)
        self.last_seats = self.seats.copy()
        self.cooldown_until = np.zeros(n, dtype=np.int64)  # post-upsell follow-up end
        self.post_h = np.zeros(n)
        self.post_h_churn = np.zeros(n)
        self.post_kind = np.zeros(n, dtype=np.int64)
        self.post_pre_tier = np.zeros(n, dtype=np.int64)
        self.post_pre_seats = np.zeros(n, dtype=np.int64)
        self.block_lo = np.zeros(n, dtype=np.int64)  # gated min_tier range (lo, hi]
        self.block_hi = np.zeros(n, dtype=np.int64)
        self.block_until = np.zeros(n, dtype=np.int64)
        self.boost_until = np.zeros(n, dtype=np.int64)
        self.users_block_until = np.zeros(n, dtype=np.int64)
        self.fill_until = np.zeros(n, dtype=np.int64)
        self.fill_target = np.zeros(n, dtype=np.int64)
        self.contacted_until = np.zeros(n, dtype=np.int64)
        self.last_outreach = np.full(n, -(10**6), dtype=np.int64)
        self.outreach_mult = np.ones(n)
        self.mtd = np.zeros((n, 2))
        self.prev = np.zeros((n, 2))
        self.ring = np.zeros((30, n, K), dtype=np.int32)
        self.s30 = np.zeros((n, K), dtype=np.int64)
        self.s14 = np.zeros((n, K), dtype=np.int64)

        self.subs = _Records("acct", "time_us", "tier", "seats", "status")
        self.outreach = _Records("acct", "time_us", "channel", "trigger", "holdout", "effect")
        self.truth = _Records("acct", "day", "p", "p_touched", "effect")
        self.post_truth = _Records("acct", "time_us", "kind", "p", "adopted", "forced")
        self.events = _Records("acct", "time_us", "event", "user", "quantity", "day")

        # Accounts created before day 0: a trial row (if any) and the active row, carrying the
        # state the simulation starts from (trials still running at day 0 end in the loop).
        old = self.created_day < 0
        trial_at_start = old & self.has_trial & (self.trial_end_day >= 0)
        self.status[old] = np.where(trial_at_start[old], TRIALING, ACTIVE)
        first_status = np.where(self.has_trial, TRIALING, ACTIVE)
        idx = np.flatnonzero(old)
        self.subs.add(
            acct=idx,
            time_us=self.created_us[idx],
            tier=self.tier[idx],
            seats=self.seats[idx],
            status=first_status[idx],
        )
        conv = np.flatnonzero(old & self.has_trial & (self.trial_end_day < 0))
        self.subs.add(
            acct=conv,
            time_us=self.created_us[conv] + self.trial_days[conv] * DAY_US,
            tier=self.tier[conv],
            seats=self.seats[conv],
            status=np.full(len(conv), ACTIVE),
        )

    def _init_users(self) -> None:
        n, rng, tl = self.n, self.rng, self.tl
        self.users = _Growable(
            {
                "acct": np.int64,
                "created_us": np.int64,
                "created_day": np.int64,
                "deact_day": np.int64,
                "deact_us": np.int64,
                "role": np.int8,
            },
            capacity=int(self.initial_users.sum() * 1.6),
        )
        acct = np.repeat(np.arange(n), self.initial_users)
        first = np.r_[True, acct[1:] != acct[:-1]]
        # Users of older accounts joined between the sign-up and day 0; the first one (the
        # admin) at sign-up. New accounts' first users arrive on the sign-up day.
        c_us = self.created_us[acct]
        old = self.created_day[acct] < 0
        span = np.where(old, tl.start_us - c_us, 3 * 3600 * SECOND_US)
        created = c_us + np.where(first, 60 * SECOND_US, (rng.random(len(acct)) * span)).astype(
            np.int64
        )
        created = np.maximum(created, c_us + SECOND_US)
        role = np.where(first, 0, np.where(rng.random(len(acct)) < 0.75, 1, 2))
        self._add_users(acct, created, role)
        # Former users of older accounts, gone before the window.
        n_gone = rng.poisson(0.15 * self.initial_users * (self.created_day < -60))
        acct = np.repeat(np.arange(n), n_gone)
        if len(acct):
            c_us = self.created_us[acct]
            span = tl.start_us - c_us
            created = c_us + (rng.random(len(acct)) * span * 0.7).astype(np.int64) + SECOND_US
            deact = created + (rng.random(len(acct)) * (tl.start_us - created)).astype(np.int64)
            deact = np.maximum(deact, created + SECOND_US)
            idx = self._add_users(acct, created, np.full(len(acct), 1))
            self.users.cols["deact_us"][idx] = deact
            self.users.cols["deact_day"][idx] = (deact - tl.start_us) // DAY_US
        self.n_active = np.zeros(n, dtype=np.int64)
        live = self.status != PENDING
        self.n_active[live] = self.initial_users[live]

    def _add_users(self, acct: np.ndarray, created_us: np.ndarray, role: np.ndarray) -> np.ndarray:
        return self.users.append(
            acct=acct,
            created_us=created_us,
            created_day=(created_us - self.tl.start_us) // DAY_US,
            deact_day=np.full(len(acct), NEVER),
            deact_us=np.zeros(len(acct), dtype=np.int64),
            role=role,
        )

    def _adoption_share(self) -> np.ndarray:
        """Long-run probability that an account uses each product feature (n x features)."""
        pop = cat.FEATURE_POPULARITY[None, :] * (0.15 + 1.3 * self.breadth_latent[:, None])
        return np.clip(pop, 0.02, 0.98)

    # ----------------------------------------------------------------- observation
    def _observe(self) -> _Observed:
        s30, s14 = self.s30, self.s14
        used = np.maximum(self.prev, self.mtd)
        util = (used / LIMITS[self.tier - 1]).max(axis=1)
        breadth = (s30[:, :NF] > 0).sum(axis=1)
        power14 = s14[:, K_POWER]
        pricing30 = s30[:, K_PRICING]
        paywall30 = s30[:, K_PAYWALL]
        # Team growth relative to the team: two new users mean more to a team of five.
        team = (s30[:, K_ADDED] >= np.maximum(2, 0.1 * self.n_active)) | (
            self.n_active > self.seats
        )
        f = np.where(util >= 0.85, QUOTA_HIGH_MULT, np.where(util >= 0.6, QUOTA_MID_MULT, 1.0))
        f = f * np.where(power14 >= 3, POWER_MULT, 1.0)
        f = f * np.where(team, TEAM_MULT, 1.0)
        breadth_level = (breadth >= 2).astype(int) + (breadth >= 4) + (breadth >= 6)
        f = f * np.asarray(BREADTH_MULTS)[breadth_level]
        f = f * np.asarray(PRICING_MULTS)[(pricing30 >= 1).astype(int) + (pricing30 >= 3)]
        f = f * np.where(paywall30 >= 2, PAYWALL_MULT, 1.0)
        return _Observed(
            util=util,
            breadth=breadth,
            power14=power14,
            pricing30=pricing30,
            paywall30=paywall30,
            team=team,
            support30=s30[:, K_SUPPORT],
            export30=s30[:, K_EXPORT],
            premium30=s30[:, K_PREMIUM],
            factor=f,
        )

    def _churn_hazard(self, ob: _Observed) -> np.ndarray:
        h = cat.SEGMENT_CHURN_MONTHLY[self.segment] / 30
        h = h * np.where(ob.breadth <= 1, 2.5, 1.0)
        h = h * np.where(self.n_active < 0.5 * self.seats, 1.6, 1.0)
        h = h * np.where(ob.support30 >= 2, 1.5, 1.0)
        return h * np.where(ob.export30 >= 1, 1.8, 1.0)

    def _conversion_probability(self, ob: _Observed) -> np.ndarray:
        z = -1.6 + 0.45 * ob.breadth + 0.3 * np.minimum(self.n_active, 5)
        return 1 / (1 + np.exp(-z))

    # ----------------------------------------------------------------- the day loop
    def run(self) -> ChunkResult:
        tl = self.tl
        month_start = np.zeros(tl.n_days, dtype=bool)
        month_start[tl.month_start_days] = True
        for d in range(tl.n_days):
            if month_start[d] and d > 0:
                self.prev = self.mtd
                self.mtd = np.zeros_like(self.mtd)
            ob = self._observe()
            h_raw = EXPANSION_BASE_MONTHLY[self.segment] / 30 * ob.factor
            h_raw = h_raw * np.where(self.contacted_until > d, self.outreach_mult, 1.0)
            if month_start[d] and d >= tl.truth_start_day:
                self._record_truth(d, ob, h_raw)
            if self.upgrades_at_renewal:
                age = d - self.created_day
                self.renewal_today = (age > 0) & (age % RENEWAL_DAYS == 0)
                # Hazard over a renewal period kept about the same: half on other days (seat
                # additions only), the rest concentrated on the renewal day.
                h_raw = h_raw * np.where(self.renewal_today, RENEWAL_DAYS / 2, 0.5)
            reactivated = self._subscription_changes(d, ob, h_raw)
            if self.outreach_on:
                self._outreach(d, ob)
            self._departures(d)
            added, invites = self._arrivals(d, reactivated)
            self._events(d, ob, reactivated, added, invites)
            self._evolve_latents(d)
        return self._result()

    def _record_truth(self, d: int, ob: _Observed, h_raw: np.ndarray) -> None:
        """True P(expansion in [as_of, as_of + 60d)) from the hazard at as_of, held constant."""
        st = self.status
        p = np.zeros(self.n)
        active = st == ACTIVE
        rem = np.maximum(self.cooldown_until - d, 0)
        open_days = np.clip(60 - rem, 0, 60)
        # Inside a post-upsell follow-up the account must first survive it.
        survive = np.exp(-self.post_h * np.minimum(rem, 60))
        p[active] = (survive * (1 - np.exp(-open_days * h_raw)))[active]
        trial = st == TRIALING
        t_rem = np.clip(self.trial_end_day - d, 0, 60)
        p_trial = self._conversion_probability(ob) * (1 - np.exp(-(60 - t_rem) * h_raw))
        p[trial] = p_trial[trial]
        # The same probability had the account been touched today (a triggered touch): the
        # hazard times the touch's factor while the effect lasts (on top of an earlier touch's,
        # if any). The difference is the true uplift the experiment and an uplift model try
        # to recover.
        effect = self.effects.multiplier(self._effect_state(ob, np.zeros(self.n, dtype=bool)))
        h_touched = h_raw * effect
        overlap = np.clip(OUTREACH_EFFECT_DAYS - rem, 0, None)
        extra = (h_touched - h_raw) * overlap
        p_touched = np.zeros(self.n)
        p_touched[active] = (survive * (1 - np.exp(-(open_days * h_raw + extra))))[active]
        t_overlap = np.clip(OUTREACH_EFFECT_DAYS - t_rem, 0, None)
        t_extra = (h_touched - h_raw) * t_overlap
        p_touched_trial = self._conversion_probability(ob) * (
            1 - np.exp(-((60 - t_rem) * h_raw + t_extra))
        )
        p_touched[trial] = p_touched_trial[trial]
        idx = np.flatnonzero(active | trial)
        self.truth.add(
            acct=idx,
            day=np.full(len(idx), d),
            p=p[idx],
            p_touched=p_touched[idx],
            effect=effect[idx],
        )

    def _effect_state(self, ob: _Observed, manual: np.ndarray) -> dict[str, np.ndarray]:
        """The account state the treatment effect rules read (`treatment.State`)."""
        return {
            "util": ob.util,
            "breadth": ob.breadth,
            "power14": ob.power14,
            "pricing30": ob.pricing30,
            "paywall30": ob.paywall30,
            "team": ob.team,
            "support30": ob.support30,
            "segment": self.segment,
            "manual": manual,
        }

    def _change_time(self, d: int, idx: np.ndarray) -> np.ndarray:
        secs = HOUR_TABLE[self.region[idx], self.rng.integers(0, HOUR_BINS, len(idx))] * 3600
        secs = secs + self.rng.integers(0, 3600, len(idx))
        return self.tl.start_us + d * DAY_US + secs * SECOND_US

    def _write_rows(self, idx: np.ndarray, time_us: np.ndarray) -> None:
        self.subs.add(
            acct=idx,
            time_us=time_us,
            tier=self.tier[idx],
            seats=np.where(self.status[idx] == CANCELED, 0, self.seats[idx]),
            status=self.status[idx],
        )

    def _subscription_changes(self, d: int, ob: _Observed, h_raw: np.ndarray) -> np.ndarray:
        """Draw and apply the day's contract changes; at most one per account and day."""
        rng, n, st = self.rng, self.n, self.status
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        touched = np.zeros(n, dtype=bool)

        # Sign-ups of the day.
        new = np.flatnonzero((self.created_day == d) & (st == PENDING))
        st[new] = np.where(self.has_trial[new], TRIALING, ACTIVE)
        rows.append((new, self.created_us[new]))
        touched[new] = True

        # Trial ends: convert (same plan, seats and price: not an expansion) or cancel.
        ending = np.flatnonzero((st == TRIALING) & (self.trial_end_day == d))
        converts = rng.random(len(ending)) < self._conversion_probability(ob)[ending]
        end_t = self.created_us[ending] + self.trial_days[ending] * DAY_US
        st[ending] = np.where(converts, ACTIVE, CANCELED)
        self.last_seats[ending] = self.seats[ending]
        self._cancel_users(ending[~converts], end_t[~converts])
        rows.append((ending, end_t))
        touched[ending] = True

        u, u2 = rng.random(n), rng.random(n)
        # Post-upsell follow-up: the only possible change is a reversal (or ordinary churn).
        in_post = (st == ACTIVE) & (self.cooldown_until > d) & ~touched
        rev = np.flatnonzero(in_post & (u < 1 - np.exp(-self.post_h)))
        rev_t = self._change_time(d, rev)
        self._reverse(d, rev, rev_t, u2[rev])
        rows.append((rev, rev_t))
        touched[rev] = True

        # Ordinary competing changes of active accounts outside a follow-up.
        free = (st == ACTIVE) & (self.cooldown_until <= d) & ~touched
        h_exp = np.where(free, h_raw, 0.0)
        h_churn = np.where(free, self._churn_hazard(ob), 0.0)
        h_down = np.where(
            free & (self.tier >= 2), 0.004 / 30 * np.where(ob.premium30 == 0, 3, 1), 0
        )
        h_con = np.where(
            free & (self.seats >= 2),
            0.004 / 30 * np.where(self.n_active < 0.7 * self.seats, 5, 1),
            0,
        )
        total = h_exp + h_churn + h_down + h_con
        hit = free & (u < 1 - np.exp(-total))
        touched |= hit
        share = u2 * total
        kind = np.select(
            [share < h_exp, share < h_exp + h_churn, share < h_exp + h_churn + h_down],
            [0, 1, 2],
            3,
        )
        exp_idx = np.flatnonzero(hit & (kind == 0))
        exp_t = self._change_time(d, exp_idx)
        self._expand(d, exp_idx, exp_t, ob)
        rows.append((exp_idx, exp_t))

        churn = np.flatnonzero(hit & (kind == 1))
        churn_t = self._change_time(d, churn)
        self.last_seats[churn] = self.seats[churn]
        st[churn] = CANCELED
        self._cancel_users(churn, churn_t)
        rows.append((churn, churn_t))

        down = np.flatnonzero(hit & (kind == 2))
        self.tier[down] -= 1
        rows.append((down, self._change_time(d, down)))

        con = np.flatnonzero(hit & (kind == 3))
        target = np.round(self.seats[con] * rng.uniform(0.6, 0.9, len(con)))
        target = np.maximum(target, np.minimum(self.n_active[con], self.seats[con] - 1))
        self.seats[con] = np.clip(target, 1, self.seats[con] - 1).astype(np.int64)
        con_t = self._change_time(d, con)
        self._trim_users(d, con, con_t)
        rows.append((con, con_t))

        # Reactivations of cancelled accounts.
        react = np.flatnonzero((st == CANCELED) & ~touched & (u < 1 - np.exp(-0.015 / 30)))
        st[react] = ACTIVE
        self.seats[react] = np.maximum(
            1, np.round(self.last_seats[react] * rng.uniform(0.3, 0.8, len(react)))
        ).astype(np.int64)
        rows.append((react, self._change_time(d, react)))

        for idx, t in rows:
            if len(idx):
                self._write_rows(idx, t)
        return react

    def _expand(self, d: int, idx: np.ndarray, t: np.ndarray, ob: _Observed) -> None:
        """Apply expansions: tier upgrade or seat expansion, adoption and follow-up state."""
        if not len(idx):
            return
        rng = self.rng
        tier, seats, users = self.tier[idx], self.seats[idx], self.n_active[idx]
        util, paywall, team = ob.util[idx], ob.paywall30[idx], ob.team[idx]
        # Quota pressure and paywall hits call for a bigger plan, team growth for more seats.
        p_up = np.where(util >= 0.85, 0.85, np.where(paywall >= 1, 0.75, np.where(team, 0.2, 0.45)))
        up = (rng.random(len(idx)) < p_up) & (tier < 4)
        if self.upgrades_at_renewal:
            up &= self.renewal_today[idx]
        step = np.where((rng.random(len(idx)) < 0.1) & (tier <= 2), 2, 1)
        new_tier = np.where(up, np.minimum(tier + step, 4), tier)
        add = np.maximum(1, np.round(seats * rng.uniform(0.1, 0.4, len(idx)))).astype(np.int64)
        new_seats = np.where(up, np.maximum(seats, users), np.maximum(seats, users) + add)
        b = self.breadth_latent[idx]
        # Adoption is a coin flip loaded by what was visible before: broad accounts, and ones
        # that hit the paywall (upgrades) or were adding people (seats), take up more often.
        p_adopt = np.where(
            up,
            0.05 + 0.85 * b + 0.2 * (paywall >= 1),
            0.1 + 0.6 * b + 0.25 * (self.s30[idx, K_ADDED] >= 2),
        )
        adopter = rng.random(len(idx)) < p_adopt
        forced = util >= 0.85

        self.post_pre_tier[idx], self.post_pre_seats[idx] = tier, seats
        self.tier[idx], self.seats[idx] = new_tier, new_seats
        self.post_kind[idx] = np.where(up, KIND_UPGRADE, KIND_EXPANSION)
        self.cooldown_until[idx] = d + POST_UPSELL_DAYS
        rev_90 = np.where(adopter, REVERSAL_90D_ADOPTER, REVERSAL_90D_NON_ADOPTER)
        # The follow-up covers the days after the expansion day: POST_UPSELL_DAYS - 1 draws.
        exposure = POST_UPSELL_DAYS - 1
        h_rev = -np.log(1 - rev_90) / exposure * np.where(forced, QUOTA_FORCED_MULT, 1.0)
        self.post_h_churn[idx] = self._churn_hazard(ob)[idx]
        self.post_h[idx] = h_rev + self.post_h_churn[idx]
        p_churn = 1 - np.exp(-exposure * self.post_h[idx])

        # Upgrades: adopters take up the newly included features (boosted for 30 days);
        # non-adopters leave them alone. Seat expansions: adopters fill the new seats.
        gated_ev = (EV_MIN_TIER[None, :] > tier[:, None]) & (
            EV_MIN_TIER[None, :] <= new_tier[:, None]
        )
        gated_feature = (gated_ev.astype(np.int64) @ EVENT_FEATURE_ONEHOT) > 0
        ua = up & adopter
        self.adopted[idx[ua]] |= gated_feature[ua]
        self.boost_until[idx[ua]] = d + 30
        un = up & ~adopter
        self.block_until[idx[un]] = d + ADOPTION_BLOCK_DAYS
        self.block_lo[idx], self.block_hi[idx] = tier, new_tier
        sa = ~up & adopter
        self.fill_until[idx[sa]] = d + 30
        self.fill_target[idx[sa]] = new_seats[sa]
        self.users_block_until[idx[~up & ~adopter]] = d + ADOPTION_BLOCK_DAYS

        self.post_truth.add(
            acct=idx,
            time_us=t,
            kind=np.where(up, KIND_UPGRADE, KIND_EXPANSION),
            p=p_churn,
            adopted=adopter,
            forced=forced,
        )

    def _reverse(self, d: int, idx: np.ndarray, t: np.ndarray, u2: np.ndarray) -> None:
        """A post-upsell reversal: churn, downgrade or contraction below the pre-expansion mrr."""
        if not len(idx):
            return
        rng = self.rng
        ordinary = u2 < self.post_h_churn[idx] / self.post_h[idx]
        choice = rng.random(len(idx))
        pre_tier, pre_seats = self.post_pre_tier[idx], self.post_pre_seats[idx]
        upgrade = self.post_kind[idx] == KIND_UPGRADE
        cut = np.maximum(1, np.round(pre_seats * rng.uniform(0.1, 0.3, len(idx)))).astype(int)
        fewer = np.maximum(1, pre_seats - cut)
        tier, seats = self.tier[idx].copy(), self.seats[idx].copy()
        churn = ordinary | (choice < 0.35)
        # An upgraded account goes back to its old tier with fewer seats than before; a seat
        # expansion is undone below the old seat count, or one tier below the old one. Base
        # and seat prices rise with the tier, so each lands strictly below the old mrr.
        back_fewer = ~churn & (pre_seats >= 2) & (upgrade | (choice >= 0.65) | (pre_tier < 2))
        tier_below = ~churn & ~back_fewer & (pre_tier >= 2)
        tier = np.where(back_fewer, pre_tier, np.where(tier_below, pre_tier - 1, tier))
        seats = np.where(back_fewer, fewer, np.where(tier_below, pre_seats, seats))
        churn = churn | ~(back_fewer | tier_below)
        self.tier[idx], self.seats[idx] = tier, seats
        self.last_seats[idx[churn]] = self.post_pre_seats[idx[churn]]
        self.status[idx[churn]] = CANCELED
        self.cooldown_until[idx] = d
        self.post_h[idx] = 0.0
        self._cancel_users(idx[churn], t[churn])
        self._trim_users(d, idx[~churn], t[~churn])

    # ----------------------------------------------------------------- users
    def _cancel_users(self, idx: np.ndarray, t: np.ndarray) -> None:
        """Deactivate every active user of the accounts at time t (cancellation)."""
        if not len(idx):
            return
        acct = self.users["acct"]
        when = np.full(self.n, -1, dtype=np.int64)
        when[idx] = t
        sel = np.flatnonzero((when[acct] >= 0) & (self.users["deact_day"] == NEVER))
        self._deactivate(
            sel, np.maximum(when[acct[sel]], self.users["created_us"][sel] + SECOND_US)
        )
        self.n_active[idx] = 0

    def _trim_users(self, d: int, idx: np.ndarray, t: np.ndarray) -> None:
        """Deactivate random users of accounts that now have more users than seats."""
        surplus = np.zeros(self.n, dtype=np.int64)
        surplus[idx] = np.maximum(self.n_active[idx] - self.seats[idx], 0)
        if not surplus.any():
            return
        when = np.zeros(self.n, dtype=np.int64)
        when[idx] = t
        acct = self.users["acct"]
        cand = np.flatnonzero(
            (surplus[acct] > 0)
            & (self.users["deact_day"] == NEVER)
            & (self.users["created_day"] < d)
            & (self.users["role"] != 0)
        )
        order = np.lexsort((self.rng.random(len(cand)), acct[cand]))
        cand = cand[order]
        a = acct[cand]
        first = np.searchsorted(a, a, side="left")
        rank = np.arange(len(cand)) - first
        sel = cand[rank < surplus[a]]
        self._deactivate(sel, when[acct[sel]])
        np.subtract.at(self.n_active, acct[sel], 1)

    def _deactivate(self, sel: np.ndarray, t: np.ndarray) -> None:
        self.users.cols["deact_us"][sel] = t
        self.users.cols["deact_day"][sel] = (t - self.tl.start_us) // DAY_US

    def _departures(self, d: int) -> None:
        """Each user leaves with a small daily probability (never the account admin)."""
        n_users = self.users.n
        hits = self.rng.binomial(n_users, DEPARTURE_MONTHLY / 30)
        if not hits:
            return
        cand = np.unique(self.rng.integers(0, n_users, hits))
        ok = (
            (self.users["deact_day"][cand] == NEVER)
            & (self.users["created_day"][cand] < d)
            & (self.users["role"][cand] != 0)
        )
        sel = cand[ok]
        acct = self.users["acct"][sel]
        ok = self.status[acct] != PENDING
        sel, acct = sel[ok], acct[ok]
        self._deactivate(sel, self._change_time(d, acct))
        np.subtract.at(self.n_active, acct, 1)

    def _arrivals(self, d: int, reactivated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Users join; they count as active from tomorrow (see `_events`).

        Returns the users added per account and the (account, time) of the day's invites.
        """
        rng, st, n = self.rng, self.status, self.n
        live = ((st == ACTIVE) | (st == TRIALING)) & (self.created_day < d)
        live[reactivated] = False
        lam = self.team_growth / 30 * np.exp(np.minimum(self.trend, 0.1) * 5)
        # Most products make adding users beyond the seats bought awkward.
        lam = np.where(self.n_active >= self.seats, lam * 0.1, lam)
        fill = self.fill_until > d
        lam = np.where(fill, np.maximum(lam, (self.fill_target - self.n_active) / 10), lam)
        lam = np.where(live & (self.users_block_until <= d), lam, 0.0)
        count = rng.poisson(lam)
        # Reactivated accounts re-staff; new accounts' first users were created at sign-up.
        count[reactivated] = np.maximum(
            1, np.round(self.seats[reactivated] * rng.uniform(0.6, 1.0, len(reactivated)))
        )
        new = np.flatnonzero(self.created_day == d)
        added = count.copy()
        added[new] += self.initial_users[new]
        acct = np.repeat(np.arange(n), count)
        if not len(acct):
            return added, np.zeros((2, 0), dtype=np.int64)
        t = self._change_time(d, acct)
        first = np.r_[True, acct[1:] != acct[:-1]]
        staffing = np.isin(acct, reactivated)
        role = np.where(first & staffing, 0, np.where(rng.random(len(acct)) < 0.75, 1, 2))
        self._add_users(acct, t, role)
        # Organic arrivals were invited by a colleague a little earlier the same day.
        a, ta = acct[~staffing], t[~staffing]
        inv_t = ta - (rng.random(len(a)) * 3 * 3600).astype(np.int64) * SECOND_US
        inv_t = np.maximum(inv_t, self.tl.start_us + d * DAY_US)
        return added, np.stack([a, inv_t])

    # ----------------------------------------------------------------- outreach
    def _outreach(self, d: int, ob: _Observed) -> None:
        rng = self.rng
        ready = (
            (self.status == ACTIVE)
            & (self.cooldown_until <= d)
            & (self.last_outreach <= d - OUTREACH_COOLDOWN_DAYS)
        )
        conds = np.stack(
            [
                ob.util >= 0.85,
                ob.power14 >= 3,
                ob.team,
                ob.breadth >= 5,
                ob.pricing30 >= 1,
            ],
            axis=1,
        )
        # The playbook scores the signals (a quota alert counts twice) and fires from 3 up.
        # The trigger recorded is whichever satisfied rule happened to fire first that day.
        score = conds.sum(axis=1) + conds[:, 0]
        pick = np.where(conds, self.rng.random(conds.shape), -1.0)
        trigger = pick.argmax(axis=1)
        fire = ready & (score >= 3) & (rng.random(self.n) < 0.06)
        # CSMs also reach out by hand, mostly to bigger accounts that look promising to them.
        manual_p = 0.002 / 30 * ob.factor**1.2 * np.array([0.5, 1.5, 2.5])[self.segment]
        manual = ready & ~fire & (rng.random(self.n) < manual_p)
        trigger = np.where(manual, 5, trigger)
        idx = np.flatnonzero(fire | manual)
        if not len(idx):
            return
        trig = trigger[idx]
        channel = np.select(
            [trig == 5, trig == 2, (trig == 1) | (trig == 3)],
            [2, np.where(self.segment[idx] == 0, 1, 2), 0],
            1,
        )
        holdout = rng.random(len(idx)) < 0.1
        self.last_outreach[idx] = d
        contacted = idx[~holdout]
        self.contacted_until[contacted] = d + OUTREACH_EFFECT_DAYS
        # The factor the touch gives (held-out rows: the one it would have given).
        effect = self.effects.multiplier(self._effect_state(ob, manual))[idx]
        self.outreach_mult[contacted] = effect[~holdout]
        self.outreach.add(
            acct=idx,
            time_us=self._change_time(d, idx),
            channel=channel,
            trigger=trig,
            holdout=holdout,
            effect=effect,
        )

    # ----------------------------------------------------------------- events
    def _rates(self, d: int, ob: _Observed, live: np.ndarray) -> np.ndarray:
        """Expected count of each event type per account for day d (n x E)."""
        wd = self.tl.weekday[d]
        wu, mw = USER_WEEKDAY[wd], MACHINE_WEEKDAY[wd]
        avail = AVAIL_BY_TIER[self.tier - 1]
        # Below its tier a feature can only be tried: rare events, often with a paywall view.
        adopted = self.adopted[:, EV_FEATURE]
        ag = adopted * GATE_BY_TIER[self.tier - 1]
        act = ACTIVITY_SCALE * self.engagement * self.n_active**0.5 * wu
        rate = np.multiply.outer(act, EV_WEIGHT)
        rate *= ag
        # Power features are driven by a few power users, not by the size of the team.
        power = np.exp(self.log_power_level + self.log_power_dev)
        power_act = 3 * ACTIVITY_SCALE * self.engagement * (1 + self.n_active) ** 0.3 * wu * power
        rate[:, EV_POWER] = np.multiply.outer(power_act, EV_WEIGHT[EV_POWER]) * ag[:, EV_POWER]
        rate[np.arange(self.n), self.volume_event] *= self.volume
        a = self.adopted
        rate[:, IX["integration_synced"]] = 0.5 * mw * a[:, FI["integrations"]]
        rate[:, IX["automation_run"]] = (
            mw * (0.2 + 0.5 * power) * a[:, FI["automations"]] * avail[:, IX["automation_run"]]
        )
        usage = np.exp(self.log_usage_level + self.log_usage_dev)  # per month, per metric
        daily_api = usage[:, 0] / 30 * mw * a[:, FI["api"]]
        # API traffic arrives in batches: a few per day, larger for heavier users.
        self.api_batches = np.clip(daily_api / 3000, 0.3, 6) * (daily_api > 0)
        self.api_batch_mean = np.divide(
            daily_api, self.api_batches, out=np.zeros(self.n), where=self.api_batches > 0
        )
        rate[:, IX["api_request_batch"]] = self.api_batches
        rate[:, IX["report_generated"]] = usage[:, 1] / 30 * wu * a[:, FI["reports"]]
        # An adopted feature shows up every few days however small the team: breadth is about
        # which features an account relies on, not about how much it clicks.
        np.maximum(rate, ag * (FEATURE_FLOOR * wu), out=rate)
        over = ob.util >= 1.0
        pressure = 1 + 2 * (ob.util >= 0.85)
        rate[:, IX["pricing_page_viewed"]] = 0.035 * np.exp(self.log_intent) * pressure
        attempts = (rate[:, EV_PREMIUM] * ~avail[:, EV_PREMIUM]).sum(axis=1)
        rate[:, IX["paywall_viewed"]] = 0.6 * attempts + 0.15 * over
        unhappy = 1 + 3 * (self.trend < -0.03)
        rate[:, IX["support_ticket_opened"]] = 0.006 * np.sqrt(self.n_active + 1) * unhappy
        rate[:, IX["data_exported"]] = 0.0015 * unhappy

        # Post-upsell adoption: blocked features for non-adopters, boosted ones for adopters.
        special = np.flatnonzero((self.block_until > d) | (self.boost_until > d))
        if len(special):
            gated = (EV_MIN_TIER[None, :] > self.block_lo[special, None]) & (
                EV_MIN_TIER[None, :] <= self.block_hi[special, None]
            )
            sub = rate[special]
            blocked = gated & (self.block_until[special, None] > d)
            boosted = gated & (self.boost_until[special, None] > d) & adopted[special]
            sub = np.where(blocked, 0.0, sub)
            sub = np.where(boosted, np.maximum(sub * 3, 0.12), sub)
            rate[special] = sub
        rate[~live] = 0.0
        return rate

    def _events(
        self,
        d: int,
        ob: _Observed,
        reactivated: np.ndarray,
        added: np.ndarray,
        invites: np.ndarray,
    ) -> None:
        """Draw the day's events, then roll the observables forward by the day."""
        rng, tl = self.rng, self.tl
        st = self.status
        live = ((st == ACTIVE) | (st == TRIALING)) & (self.created_day < d)
        live[reactivated] = False
        rate = self._rates(d, ob, live)
        # Most rates are zero (features not adopted, accounts not live): draw only the others.
        flat_rate = rate.ravel()
        drawn = np.flatnonzero(flat_rate)
        counts = np.zeros((self.n, E), dtype=np.int64)
        counts.ravel()[drawn] = rng.poisson(flat_rate[drawn])
        # float32 matmul goes through BLAS; an integer one would be ten times slower.
        today = np.rint(counts.astype(np.float32) @ EVENT_TO_OBSERVABLE).astype(np.int64)
        avail = AVAIL_BY_TIER[self.tier - 1][:, EV_PREMIUM]
        today[:, K_PREMIUM] = (counts[:, EV_PREMIUM] * avail).sum(axis=1)
        today[:, K_ADDED] = added
        today[:, EV_FEATURE[IX["user_invited"]]] += np.bincount(invites[0], minlength=self.n)

        flat = counts.ravel()
        nz = np.flatnonzero(flat)
        reps = flat[nz]
        acct = np.repeat(nz // E, reps)
        ev = np.repeat(nz % E, reps)
        m = len(acct)
        machine = EV_ACCOUNT_LEVEL[ev]
        profile = np.where(machine, MACHINE_PROFILE, self.region[acct])
        secs = HOUR_TABLE[profile, rng.integers(0, HOUR_BINS, m)] * 3600 + rng.integers(0, 3600, m)
        t = tl.start_us + d * DAY_US + secs * SECOND_US
        # Invites come from the day's arrivals (by a colleague active today).
        n_inv = invites.shape[1]
        acct = np.concatenate([acct, invites[0]])
        ev = np.concatenate([ev, np.full(n_inv, IX["user_invited"])])
        t = np.concatenate([t, invites[1]])
        machine = np.concatenate([machine, np.zeros(n_inv, dtype=bool)])
        m += n_inv
        qty = np.ones(m, dtype=np.float32)
        api = ev == IX["api_request_batch"]
        if api.any():
            noise = np.exp(rng.normal(-0.045, 0.3, int(api.sum())))
            qty[api] = np.maximum(1.0, np.round(self.api_batch_mean[acct[api]] * noise))
            self.mtd[:, 0] += np.bincount(acct[api], weights=qty[api], minlength=self.n)
        self.mtd[:, 1] += counts[:, IX["report_generated"]]
        order = np.argsort(t, kind="stable")
        self.events.add(
            acct=acct[order].astype(np.int32),
            time_us=t[order],
            event=ev[order].astype(np.int16),
            user=np.where(machine, -1, -2)[order].astype(np.int32),
            quantity=qty[order],
            day=np.full(m, d, dtype=np.int16),
        )
        # Roll the 30- and 14-day windows forward by this day.
        slot = d % 30
        old30 = self.ring[slot].astype(np.int64)
        old14 = self.ring[(d - 14) % 30].astype(np.int64) if d >= 14 else 0
        self.ring[slot] = today.astype(np.int32)
        self.s30 += today - old30
        self.s14 += today - old14
        self.n_active += added

    def _evolve_latents(self, d: int) -> None:
        rng, n = self.rng, self.n
        self.engagement *= np.exp(self.trend / 30 + rng.normal(0, 0.015, n))
        self.engagement = np.clip(self.engagement, 0.05, 20)
        self.log_usage_level += USAGE_GROWTH_MONTHLY / 30
        self.log_usage_dev += -self.log_usage_dev / USAGE_DAYS + rng.normal(
            0, USAGE_SD * np.sqrt(2 / USAGE_DAYS), (n, 2)
        )
        self.log_intent += 0.015 * (self.log_intent_mean - self.log_intent) + rng.normal(0, 0.06, n)
        self.log_power_dev += -self.log_power_dev / POWER_DAYS + rng.normal(
            0, POWER_SD * np.sqrt(2 / POWER_DAYS), n
        )
        self.breadth_latent += (self.breadth_level - self.breadth_latent) / 180 + rng.normal(
            0, 0.004, n
        )
        self.breadth_latent = np.clip(self.breadth_latent, 0.02, 0.98)
        # Features are picked up and dropped now and then, at rates whose balance is the
        # account's adoption share: breadth moves, but the population's does not drift.
        # Decided weekly: daily draws would cost more and change nothing visible.
        if d % 7:
            return
        r = rng.random((n, NF))
        share = self._adoption_share()
        pick = ~self.adopted[:, :NF] & (r < 7 * ADOPTION_TURNOVER * share)
        drop = self.adopted[:, :NF] & (r > 1 - 7 * ADOPTION_TURNOVER * (1 - share))
        drop[:, 0] = False
        self.adopted[:, :NF] = (self.adopted[:, :NF] | pick) & ~drop

    # ----------------------------------------------------------------- result
    def _assign_users(self, ev: dict[str, np.ndarray]) -> np.ndarray:
        """A random user of the account active on the event's day, for user-level events."""
        rng = self.rng
        user = ev["user"].copy()
        acct_u = self.users["acct"]
        perm = np.argsort(acct_u, kind="stable")
        start = np.searchsorted(acct_u[perm], np.arange(self.n), side="left")
        count = np.bincount(acct_u, minlength=self.n)
        c_day, x_day = self.users["created_day"], self.users["deact_day"]
        pending = np.flatnonzero(user == -2)
        for _ in range(12):
            if not len(pending):
                break
            a, day = ev["acct"][pending], ev["day"][pending]
            cand = perm[start[a] + (rng.random(len(a)) * count[a]).astype(np.int64)]
            ok = (c_day[cand] < day) & (x_day[cand] > day)
            user[pending[ok]] = cand[ok]
            pending = pending[~ok]
        for i in pending:  # rare leftovers: scan the account's users exactly
            a, day = ev["acct"][i], ev["day"][i]
            mine = perm[start[a] : start[a] + count[a]]
            ok = mine[(c_day[mine] < day) & (x_day[mine] > day)]
            user[i] = ok[0] if len(ok) else -1
        return user

    def _result(self) -> ChunkResult:
        ev = self.events.arrays()  # in time order: each day was sorted as it was drawn
        ev["user"] = self._assign_users(ev)
        users = {k: self.users[k].copy() for k in ("acct", "created_us", "deact_us", "role")}
        accounts = {
            "created_us": self.created_us,
            "segment": self.segment,
            "region": self.region,
            "industry": self.industry,
            "csm": self.csm,
            "employees": self.employees.astype(np.int64),
            "name_parts": self.name_parts,
        }
        subs = self.subs.arrays()
        order = np.lexsort((subs["time_us"], subs["acct"]))
        subs = {k: v[order] for k, v in subs.items()}
        return ChunkResult(
            accounts=accounts,
            users=users,
            subscriptions=subs,
            events=ev,
            outreach=self.outreach.arrays(),
            expansion_truth=self.truth.arrays(),
            post_upsell_truth=self.post_truth.arrays(),
        )
