"""Deterministic synthetic card transactions for the fraud_scorer model.

Each row is the feature state of one card at the moment of a transaction, in the column order
of the model input (and of ``config/models.yaml``). Legitimate traffic is drawn from realistic
marginals; a small share of rows is then rewritten by one of three attack patterns, which puts
rows into the risky regions of feature space. The label is drawn from a *non-linear* risk
function of the observed features plus unobserved noise (:func:`fraud_logit`), so fraud depends
on the features only, through thresholds and interactions a linear model cannot express.

Everything is a pure function of ``(n_rows, seed)``: same numpy, same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "hour_of_day",
    "merchant_category_risk",
    "distance_from_home_km",
    "distance_from_last_txn_km",
    "card_present",
    "is_online",
    "foreign_transaction",
    "txn_count_1h",
    "txn_count_24h",
    "avg_amount_30d",
    "account_age_days",
    "failed_auth_24h",
    "chargebacks_365d",
)
N_FEATURES = len(FEATURE_NAMES)
COL: dict[str, int] = {name: index for index, name in enumerate(FEATURE_NAMES)}

# Columns whose values are whole numbers (counts, hours, days) or 0/1 flags; the demo CSV
# writes them without a decimal point.
INTEGER_FEATURES: frozenset[str] = frozenset(
    {
        "hour_of_day",
        "card_present",
        "is_online",
        "foreign_transaction",
        "txn_count_1h",
        "txn_count_24h",
        "account_age_days",
        "failed_auth_24h",
        "chargebacks_365d",
    }
)

# Hard bounds from config/models.yaml; generated values are clipped into them so every row is
# one the gateway would accept.
FEATURE_BOUNDS: dict[str, tuple[float, float]] = {
    "amount": (0.0, 1_000_000.0),
    "hour_of_day": (0.0, 23.0),
    "merchant_category_risk": (0.0, 1.0),
    "distance_from_home_km": (0.0, 20_040.0),
    "distance_from_last_txn_km": (0.0, 20_040.0),
    "card_present": (0.0, 1.0),
    "is_online": (0.0, 1.0),
    "foreign_transaction": (0.0, 1.0),
    "txn_count_1h": (0.0, 1000.0),
    "txn_count_24h": (0.0, 10_000.0),
    "avg_amount_30d": (0.0, 1_000_000.0),
    "account_age_days": (0.0, 36_500.0),
    "failed_auth_24h": (0.0, 100.0),
    "chargebacks_365d": (0.0, 100.0),
}

TRAINING_SEED = 20_250_101
DEMO_SEED = 20_250_202

# Card-present traffic follows shop hours: quiet 01:00-05:00, a lunch peak and an evening peak.
_HOURLY_WEIGHTS = np.array(
    [1.2, 0.7, 0.45, 0.35, 0.35, 0.6, 1.3, 2.6, 4.0, 5.0, 5.7, 6.2,
     6.8, 6.4, 5.9, 5.8, 6.0, 6.6, 7.0, 6.6, 5.6, 4.4, 3.0, 2.0],
)  # fmt: skip
_HOUR_PROBABILITIES = _HOURLY_WEIGHTS / _HOURLY_WEIGHTS.sum()

# Share of rows rewritten by an attack pattern, and how the attacks split among the patterns
# (card-not-present takeover, counterfeit card in a shop, new-account bust-out).
_ATTACK_SHARE = 0.04
_ATTACK_MIX = (0.5, 0.3, 0.2)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Transactions:
    """Generated rows: ``features`` is float64 [n, 14] in FEATURE_NAMES order."""

    features: FloatArray
    is_fraud: NDArray[np.int8]


def generate_transactions(n_rows: int, seed: int = TRAINING_SEED) -> Transactions:
    """Draw ``n_rows`` labelled transactions; identical for identical arguments."""
    rng = np.random.default_rng(seed)
    columns = _legitimate_traffic(rng, n_rows)
    _inject_attacks(rng, columns)
    features = _finalise(columns)
    noise = rng.normal(0.0, 0.5, size=n_rows)  # what the features cannot see
    fraud_probability = 1.0 / (1.0 + np.exp(-(fraud_logit(features) + noise)))
    is_fraud = (rng.random(n_rows) < fraud_probability).astype(np.int8)
    return Transactions(features=features, is_fraud=is_fraud)


def generate_card_states(n_cards: int, seed: int = DEMO_SEED) -> FloatArray:
    """Latest feature state of ``n_cards`` cards (one row each), for demos and batch scoring."""
    return generate_transactions(n_cards, seed).features


def fraud_logit(features: FloatArray) -> FloatArray:
    """Ground-truth log-odds of fraud given the observed features (noise is added by caller).

    Thresholds and products on purpose: spending far above the card's own 30-day norm, night x
    online, velocity bursts, new account x large amount, foreign x card-not-present, impossible
    travel and a convex merchant-risk term. Intercept tuned for a ~2 % fraud rate.
    """
    f = {name: features[:, index] for name, index in COL.items()}
    spend_ratio = np.log((f["amount"] + 1.0) / (f["avg_amount_30d"] + 1.0))
    night = f["hour_of_day"] <= 5
    online = f["is_online"] == 1
    not_present = f["card_present"] == 0
    foreign = f["foreign_transaction"] == 1
    logit = np.full(features.shape[0], -6.6)
    logit += 1.6 * np.clip(spend_ratio - 0.8, 0.0, 2.5)
    # Card testing: tiny online charges probe whether stolen details work (U-shape in amount).
    logit += 2.8 * (online & (f["amount"] < 3.0))
    logit += 2.4 * (night & online) - 0.3 * (night & ~online)
    # A burst is many purchases in the last hour *relative to the day*: heavy users are not.
    burst = (f["txn_count_1h"] >= 3) & (f["txn_count_24h"] < 3.0 * f["txn_count_1h"])
    logit += 2.4 * burst
    logit += 2.2 * ((f["account_age_days"] < 30) & (f["amount"] > 250.0))
    # Abroad with the card in hand is usually a traveller; abroad without it is not.
    logit += 2.4 * (foreign & not_present) - 0.8 * (foreign & ~not_present)
    logit += 0.8 * np.minimum(f["failed_auth_24h"], 3.0)
    logit += 1.8 * ((f["distance_from_last_txn_km"] > 500.0) & (f["txn_count_1h"] >= 1))
    # Far from home matters only for a domestic card-present purchase: online distances are
    # IP geolocation noise, and foreign ones are covered above.
    logit += 2.0 * (~not_present & ~foreign & (f["distance_from_home_km"] > 150.0))
    logit += 2.5 * f["merchant_category_risk"] ** 2
    logit += 0.5 * np.minimum(f["chargebacks_365d"], 3.0)
    return logit


def _legitimate_traffic(rng: np.random.Generator, n: int) -> dict[str, FloatArray]:
    """Ordinary card usage, drawn feature by feature from plausible marginals."""
    account_age = np.floor(rng.gamma(1.3, 900.0, size=n))
    # Cardholders differ in typical spend: log-normal, median about 55 (currency units).
    avg_amount = rng.lognormal(np.log(55.0), 0.75, size=n)
    # A single purchase scatters log-normally around the holder's own average.
    amount = avg_amount * rng.lognormal(-0.15, 0.85, size=n)
    is_online = (rng.random(n) < 0.32).astype(np.float64)
    # Offline but card-not-present: mail/phone orders.
    card_present = np.where(is_online == 1, 0.0, (rng.random(n) < 0.96).astype(np.float64))
    foreign = (rng.random(n) < 0.025 + 0.04 * is_online).astype(np.float64)
    hour = rng.choice(24, size=n, p=_HOUR_PROBABILITIES).astype(np.float64)
    merchant_risk = rng.beta(2.0, 14.0, size=n)
    home_km = np.where(
        is_online == 1,
        rng.lognormal(np.log(15.0), 1.4, size=n),  # geolocated IP of the shopper
        rng.lognormal(np.log(6.0), 1.1, size=n),
    )
    home_km += foreign * rng.lognormal(np.log(1800.0), 0.7, size=n)
    # Travellers abroad mostly pay near their previous purchase; some just arrived.
    last_km = rng.lognormal(np.log(4.0), 1.3, size=n)
    just_arrived = (foreign == 1) & (rng.random(n) < 0.35)
    last_km = np.where(just_arrived, home_km, last_km)
    # A tenth of cards are heavy users (commuters, small businesses) with many daily purchases.
    heavy_user = rng.random(n) < 0.1
    count_24h = rng.poisson(np.where(heavy_user, 14.0, 2.2)).astype(np.float64)
    count_1h = rng.binomial(count_24h.astype(np.int64), 0.12).astype(np.float64)
    return {
        "amount": amount,
        "hour_of_day": hour,
        "merchant_category_risk": merchant_risk,
        "distance_from_home_km": home_km,
        "distance_from_last_txn_km": last_km,
        "card_present": card_present,
        "is_online": is_online,
        "foreign_transaction": foreign,
        "txn_count_1h": count_1h,
        "txn_count_24h": count_24h,
        "avg_amount_30d": avg_amount,
        "account_age_days": account_age,
        "failed_auth_24h": rng.poisson(0.04, size=n).astype(np.float64),
        "chargebacks_365d": rng.poisson(0.03, size=n).astype(np.float64),
    }


def _inject_attacks(rng: np.random.Generator, columns: dict[str, FloatArray]) -> None:
    """Rewrite a few rows in place with attack patterns; each attack is only partly visible."""
    n = columns["amount"].shape[0]
    attacked = np.flatnonzero(rng.random(n) < _ATTACK_SHARE)
    pattern = rng.choice(len(_ATTACK_MIX), size=attacked.size, p=_ATTACK_MIX)
    _card_not_present_takeover(rng, columns, attacked[pattern == 0])
    _counterfeit_card_present(rng, columns, attacked[pattern == 1])
    _new_account_bust_out(rng, columns, attacked[pattern == 2])


def _card_not_present_takeover(
    rng: np.random.Generator, c: dict[str, FloatArray], rows: IntArray
) -> None:
    """Stolen card details used online: odd hours, bursts, failed attempts, often abroad."""
    k = rows.size
    c["is_online"][rows] = 1.0
    c["card_present"][rows] = 0.0
    c["foreign_transaction"][rows] = (rng.random(k) < 0.45).astype(np.float64)
    c["hour_of_day"][rows] = np.where(
        rng.random(k) < 0.5, rng.integers(0, 6, size=k), c["hour_of_day"][rows]
    )
    spend = c["avg_amount_30d"][rows] * rng.lognormal(1.0, 0.9, size=k)
    card_test = rng.uniform(0.5, 2.99, size=k)
    c["amount"][rows] = np.where(rng.random(k) < 0.3, card_test, spend)
    c["txn_count_1h"][rows] += rng.poisson(2.0, size=k)
    c["failed_auth_24h"][rows] += rng.poisson(0.9, size=k)
    c["distance_from_home_km"][rows] = rng.lognormal(np.log(400.0), 1.5, size=k)


def _counterfeit_card_present(
    rng: np.random.Generator, c: dict[str, FloatArray], rows: IntArray
) -> None:
    """Cloned card used in shops far from the last genuine purchase (impossible travel)."""
    k = rows.size
    c["card_present"][rows] = 1.0
    c["is_online"][rows] = 0.0
    c["distance_from_home_km"][rows] = rng.lognormal(np.log(250.0), 1.2, size=k)
    c["distance_from_last_txn_km"][rows] = rng.lognormal(np.log(600.0), 1.0, size=k)
    c["txn_count_1h"][rows] += rng.poisson(1.5, size=k)
    c["merchant_category_risk"][rows] = rng.beta(3.0, 8.0, size=k)  # electronics, jewellery
    c["amount"][rows] = c["avg_amount_30d"][rows] * rng.lognormal(0.9, 0.8, size=k)


def _new_account_bust_out(
    rng: np.random.Generator, c: dict[str, FloatArray], rows: IntArray
) -> None:
    """A fresh account maxes out quickly: large amounts and many purchases in a day."""
    k = rows.size
    c["account_age_days"][rows] = rng.integers(0, 45, size=k)
    c["amount"][rows] = rng.lognormal(np.log(600.0), 0.8, size=k)
    c["txn_count_24h"][rows] += rng.poisson(6.0, size=k)
    c["chargebacks_365d"][rows] += rng.poisson(0.3, size=k)


def _finalise(columns: dict[str, FloatArray]) -> FloatArray:
    """Keep counts consistent, round like real records, clip into the spec's bounds."""
    columns["txn_count_24h"] = np.maximum(columns["txn_count_24h"], columns["txn_count_1h"])
    columns["amount"] = np.maximum(np.round(columns["amount"], 2), 0.01)
    columns["avg_amount_30d"] = np.round(columns["avg_amount_30d"], 2)
    columns["merchant_category_risk"] = np.round(columns["merchant_category_risk"], 3)
    for name in ("distance_from_home_km", "distance_from_last_txn_km"):
        columns[name] = np.round(columns[name], 1)
    features = np.column_stack([columns[name] for name in FEATURE_NAMES])
    low = np.array([FEATURE_BOUNDS[name][0] for name in FEATURE_NAMES])
    high = np.array([FEATURE_BOUNDS[name][1] for name in FEATURE_NAMES])
    return np.clip(features, low, high)
