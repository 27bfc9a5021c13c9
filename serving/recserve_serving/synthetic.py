"""A generated online shop: a second catalog, unlike the demo set in every way the loader cares about.

It exists so that bring-your-own data is exercised on data that shares nothing with the
bundled movie ratings: string ids, other column names, Parquet with list and timestamp
columns, implicit events instead of ratings. It also has structure a recommender can learn,
so that "beats random" is a meaningful check on it.

The generative story (all draws from one seeded ``numpy`` generator, so a seed fixes the bytes):

* The shop has twelve departments, each with its own product nouns, adjectives and tags.
  Brands (four per department) each have a home department and one style (budget, premium,
  eco, sport, classic) that shows in their products' tags.
* Products: a department (unequal sizes), one of its brands, a name "BRAND ADJECTIVE NOUN",
  two or three department tags plus the brand's style, and a price set by the style. Each
  product has a latent popularity drawn log-normally, so a few sell a lot and most little.
* Customers: a preference over departments drawn from a sparse Dirichlet (most care about
  two or three), a preference over styles, and an activity level (log-normal), so a few
  customers make many events. Over the ninety days the department preference drifts from
  a starting one towards a second one.
* Events: a customer's events are spread over their active days in time order. Each one
  stays in the previous event's department with probability 0.6 (browsing sessions), else
  draws a department from the customer's current preference; the product is drawn within it
  in proportion to popularity times the customer's liking of its style. The event's strength
  is 1 (view), 3 (added to cart) or 5 (purchase); carting and buying are likelier the more
  the customer likes the product's style and department, so strong events carry the signal.

So the item texts (name, brand, department, tags) carry what predicts a customer's next
products: their departments and styles, which a text ranker can read and a retriever can
learn from co-occurrence, on top of plain popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
DEFAULT_SEED = 20260601
START = np.datetime64("2026-03-01T00:00:00", "s")
DAYS = 90
STAY_IN_DEPARTMENT = 0.6
DRIFT = 0.5
"""Share of the second department preference in a customer's mix at the end of the period."""

STYLES = ("budget", "premium", "eco", "sport", "classic")
_STYLE_PRICE = {"budget": 12.0, "premium": 80.0, "eco": 30.0, "sport": 40.0, "classic": 35.0}
DEPARTMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # department: (nouns, adjectives, tags)
    "Kitchen": (
        ("skillet", "kettle", "chef knife", "cutting board", "blender", "dutch oven"),
        ("cast-iron", "nonstick", "stainless", "ceramic", "compact"),
        ("cooking", "baking", "dishwasher-safe", "induction", "meal-prep"),
    ),
    "Outdoor": (
        ("tent", "sleeping bag", "headlamp", "backpack", "camp stove", "trekking poles"),
        ("ultralight", "waterproof", "four-season", "packable", "rugged"),
        ("camping", "hiking", "trail", "weatherproof", "backcountry"),
    ),
    "Electronics": (
        ("headphones", "charger", "smart speaker", "webcam", "power bank", "earbuds"),
        ("wireless", "noise-cancelling", "fast-charging", "bluetooth", "portable"),
        ("audio", "usb-c", "smart-home", "gadgets", "battery"),
    ),
    "Books": (
        ("novel", "cookbook", "field guide", "biography", "anthology", "atlas"),
        ("illustrated", "hardcover", "paperback", "annotated", "bestselling"),
        ("fiction", "history", "science", "travel", "poetry"),
    ),
    "Toys": (
        ("building set", "puzzle", "plush bear", "board game", "toy train", "kite"),
        ("wooden", "educational", "colourful", "giant", "classic"),
        ("kids", "family", "stem", "creative", "ages-3-plus"),
    ),
    "Beauty": (
        ("face serum", "moisturiser", "shampoo", "lip balm", "sunscreen", "hair oil"),
        ("fragrance-free", "hydrating", "organic", "gentle", "vitamin-c"),
        ("skincare", "haircare", "vegan", "sensitive-skin", "spf"),
    ),
    "Garden": (
        ("planter", "pruning shears", "seed kit", "hose", "compost bin", "watering can"),
        ("self-watering", "heavy-duty", "raised", "expandable", "rustproof"),
        ("plants", "vegetables", "watering", "lawn", "composting"),
    ),
    "Sports": (
        ("yoga mat", "dumbbells", "running shoes", "jump rope", "water bottle", "resistance bands"),
        ("non-slip", "adjustable", "breathable", "insulated", "lightweight"),
        ("fitness", "running", "yoga", "strength", "hydration"),
    ),
    "Office": (
        ("desk lamp", "notebook", "fountain pen", "monitor stand", "desk chair", "planner"),
        ("ergonomic", "dotted", "refillable", "height-adjustable", "minimalist"),
        ("stationery", "work-from-home", "writing", "organisation", "desk"),
    ),
    "Pets": (
        ("dog bed", "cat tree", "chew toy", "leash", "pet fountain", "litter box"),
        ("orthopedic", "chew-proof", "reflective", "self-cleaning", "cosy"),
        ("dogs", "cats", "pet-care", "walking", "grooming"),
    ),
    "Music": (
        ("acoustic guitar", "ukulele", "keyboard", "guitar strings", "metronome", "drum pad"),
        ("beginner", "studio", "travel-size", "weighted-key", "tuned"),
        ("instruments", "practice", "recording", "strings", "percussion"),
    ),
    "Apparel": (
        ("rain jacket", "wool socks", "hoodie", "sneakers", "beanie", "t-shirt"),
        ("merino", "recycled", "oversized", "slim-fit", "thermal"),
        ("clothing", "winter", "casual", "outerwear", "basics"),
    ),
}
_SYLLABLES = ("ka", "lo", "mi", "ne", "ro", "sa", "tu", "vi", "zo", "be", "da", "fe", "gi", "ho", "ju", "ly")


@dataclass(frozen=True)
class Catalog:
    """The generated products, column by column (the items file's columns)."""

    sku: list[str]
    product_name: list[str]
    brand: list[str]
    department: list[str]
    tags: list[list[str]]
    price: np.ndarray
    style: np.ndarray
    """Index into STYLES of each product (not written: it shows in the tags)."""
    department_index: np.ndarray
    popularity: np.ndarray


def _brands(rng: np.random.Generator, per_department: int) -> list[tuple[str, int, int]]:
    """(name, department index, style index) of each brand; names are unique made-up words."""
    names: set[str] = set()
    brands = []
    for department in range(len(DEPARTMENTS)):
        for _ in range(per_department):
            while True:
                parts = rng.choice(len(_SYLLABLES), size=int(rng.integers(2, 4)))
                name = "".join(_SYLLABLES[p] for p in parts).capitalize()
                if name not in names:
                    break
            names.add(name)
            brands.append((name, department, int(rng.integers(len(STYLES)))))
    return brands


def _catalog(rng: np.random.Generator, count: int) -> Catalog:
    departments = list(DEPARTMENTS)
    brands = _brands(rng, per_department=4)
    share = rng.dirichlet(np.full(len(departments), 3.0))
    department_index = rng.choice(len(departments), size=count, p=share)
    skus: list[str] = []
    names, brand_names, department_names, tags = [], [], [], []
    style = np.zeros(count, dtype=np.int64)
    letters = "abcdefghjkmnpqrstuvwxyz"
    for i, d in enumerate(department_index):
        nouns, adjectives, department_tags = DEPARTMENTS[departments[d]]
        home = [b for b in brands if b[1] == d]
        brand, _, brand_style = home[int(rng.integers(len(home)))]
        style[i] = brand_style
        suffix = "".join(letters[int(k)] for k in rng.integers(len(letters), size=2))
        skus.append(f"sku-{i:04d}-{suffix}")
        names.append(
            f"{brand} {adjectives[int(rng.integers(len(adjectives)))]} {nouns[int(rng.integers(len(nouns)))]}"
        )
        brand_names.append(brand)
        department_names.append(departments[d])
        picked = rng.choice(len(department_tags), size=int(rng.integers(2, 4)), replace=False)
        tags.append([department_tags[int(t)] for t in sorted(picked)] + [STYLES[brand_style]])
    base = np.array([_STYLE_PRICE[STYLES[s]] for s in style])
    price = np.round(base * rng.lognormal(0.0, 0.4, size=count), 2)
    popularity = rng.lognormal(0.0, 1.3, size=count)
    return Catalog(
        skus, names, brand_names, department_names, tags, price, style, department_index, popularity
    )


def _customer_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        candidate = f"cust-{int(rng.integers(16**6)):06x}"
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


@dataclass(frozen=True)
class Events:
    """The generated interactions, column by column (the interactions file's columns)."""

    customer: list[str]
    product: list[str]
    event_time: np.ndarray
    strength: np.ndarray


def _events(rng: np.random.Generator, catalog: Catalog, users: int, total: int) -> Events:
    n_departments = len(DEPARTMENTS)
    customers = _customer_ids(rng, users)
    first = rng.dirichlet(np.full(n_departments, 0.3), size=users)
    second = rng.dirichlet(np.full(n_departments, 0.3), size=users)
    taste = rng.dirichlet(np.full(len(STYLES), 0.5), size=users)
    activity = rng.lognormal(0.0, 0.8, size=users)
    counts = np.maximum(8, np.round(total * activity / activity.sum())).astype(np.int64)
    in_department = [np.flatnonzero(catalog.department_index == d) for d in range(n_departments)]
    stocked = np.array([len(pool) > 0 for pool in in_department], dtype=np.float64)
    period = DAYS * 86_400
    who, what, when, how = [], [], [], []
    for user in range(users):
        start = rng.uniform(0, period * 0.6)
        times = np.sort(rng.uniform(start, period, size=counts[user])).astype(np.int64)
        department = -1
        for moment in times:
            drift = DRIFT * moment / period
            mix = ((1 - drift) * first[user] + drift * second[user]) * stocked
            mix /= mix.sum()
            if department < 0 or rng.random() >= STAY_IN_DEPARTMENT:
                department = int(rng.choice(n_departments, p=mix))
            pool = in_department[department]
            liking = taste[user][catalog.style[pool]]
            weight = catalog.popularity[pool] * liking
            item = int(pool[rng.choice(len(pool), p=weight / weight.sum())])
            match = min(1.0, taste[user][catalog.style[item]] * len(STYLES) / 2) * min(
                1.0, mix[department] * n_departments / 3
            )
            draw = rng.random()
            strength = 5 if draw < 0.25 * match else 3 if draw < 0.6 * match else 1
            who.append(customers[user])
            what.append(catalog.sku[item])
            when.append(moment)
            how.append(strength)
    order = np.lexsort((np.array(what), np.array(who), np.array(when)))
    return Events(
        [who[i] for i in order],
        [what[i] for i in order],
        START + np.array(when, dtype=np.int64)[order].astype("timedelta64[s]"),
        np.array(how, dtype=np.int8)[order],
    )


def generate(
    directory: Path,
    *,
    items: int = 1500,
    users: int = 400,
    interactions: int = 40_000,
    seed: int = DEFAULT_SEED,
) -> tuple[Path, Path]:
    """Write ``items.parquet`` and ``interactions.parquet`` under ``directory``; the same
    arguments write the same bytes (with the same pyarrow). Returns the two paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    catalog = _catalog(rng, items)
    events = _events(rng, catalog, users, interactions)
    directory.mkdir(parents=True, exist_ok=True)
    item_table = pa.table(
        {
            "sku": pa.array(catalog.sku, pa.string()),
            "product_name": pa.array(catalog.product_name, pa.string()),
            "brand": pa.array(catalog.brand, pa.string()),
            "department": pa.array(catalog.department, pa.string()),
            "tags": pa.array(catalog.tags, pa.list_(pa.string())),
            "price": pa.array(catalog.price, pa.float64()),
        }
    )
    event_table = pa.table(
        {
            "customer": pa.array(events.customer, pa.string()),
            "product": pa.array(events.product, pa.string()),
            "event_time": pa.array(events.event_time, pa.timestamp("s", tz="UTC")),
            "strength": pa.array(events.strength, pa.int8()),
        }
    )
    paths = (directory / ITEMS_FILE, directory / INTERACTIONS_FILE)
    for table, path in zip((item_table, event_table), paths, strict=True):
        pq.write_table(table, path, compression="zstd", compression_level=9)
    return paths
