"""A deterministic generator of Amazon-2018-style reviews and item metadata with real signal.

The catalogue is split into categories (ink, notebooks, pens, ...). Each item has a brand, a
title, a description and a category path built from its category's vocabulary, so that item
text carries the category and text encoders place same-category items together. Items of a
category form a chain of "follow-ups" (a printer and its cartridges, a planner and its
refills): item ``j`` is usually followed by item ``j+1`` of the same category.

Every user has a latent taste, a Dirichlet draw over categories concentrated on one or two of
them. Their next review follows that taste with probability ``taste_strength`` (then, with
probability ``sequel_strength``, it is the follow-up of the user's last item in that category)
and otherwise is a draw from global Zipf popularity. A model that reads histories can thus
beat the popularity ranking by a wide margin, while popularity is itself a real signal.

The output is the raw review and metadata records of Amazon Reviews 2018 (``reviewerID``,
``asin``, ``overall``, ``unixReviewTime``, ...; ``title``, ``description`` list, ``brand``,
``category`` list), processed by exactly the same code as real Amazon files.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from genrec.settings import AmazonSettings, SyntheticSettings

log = logging.getLogger(__name__)

# Category name -> (nouns, features). Enough variety that titles differ and text encoders see
# the category in every title and description.
_CATEGORIES: list[tuple[str, list[str], list[str]]] = [
    (
        "Ink & Toner",
        ["Ink Cartridge", "Toner Cartridge", "Printer Ink Combo Pack", "Photo Ink Set", "Refill Kit"],
        [
            "high page yield",
            "smudge-resistant pigment ink",
            "vivid color prints",
            "easy cartridge installation",
            "compatible with inkjet printers",
        ],
    ),
    (
        "Notebooks & Paper",
        ["Spiral Notebook", "Composition Book", "Legal Pad", "Copy Paper Ream", "Graph Paper Pad"],
        [
            "college ruled sheets",
            "acid-free paper",
            "perforated pages",
            "bright white 20 lb paper",
            "sturdy cardboard back",
        ],
    ),
    (
        "Writing Instruments",
        ["Ballpoint Pens", "Gel Pens", "Mechanical Pencils", "Permanent Markers", "Highlighters"],
        ["smooth ink flow", "comfortable rubber grip", "quick-drying ink", "fine point tip", "retractable design"],
    ),
    (
        "Desk Organizers",
        ["Desk Organizer", "Pen Holder", "File Sorter", "Drawer Tray", "Monitor Stand"],
        [
            "mesh metal construction",
            "multiple compartments",
            "keeps your desk tidy",
            "non-slip feet",
            "space-saving design",
        ],
    ),
    (
        "Filing & Folders",
        ["Hanging File Folders", "Manila Folders", "Expanding File", "Binder Clips", "Ring Binder"],
        ["letter size", "reinforced tabs", "color-coded organization", "durable poly cover", "holds up to 200 sheets"],
    ),
    (
        "Calculators & Electronics",
        ["Scientific Calculator", "Printing Calculator", "Label Maker", "Paper Shredder", "Laminator"],
        ["solar and battery powered", "large LCD display", "cross-cut security", "auto shut-off", "two-line display"],
    ),
    (
        "Tape & Adhesives",
        ["Transparent Tape", "Packing Tape", "Glue Sticks", "Double-Sided Tape", "Tape Dispenser"],
        ["strong adhesion", "clear finish", "easy tear", "acid-free formula", "weighted base"],
    ),
    (
        "Labels & Stickers",
        ["Address Labels", "Shipping Labels", "Color Coding Dots", "Name Badges", "File Folder Labels"],
        ["laser and inkjet printable", "permanent adhesive", "jam-free printing", "easy peel backing", "smudge-free"],
    ),
    (
        "Planners & Calendars",
        ["Weekly Planner", "Wall Calendar", "Desk Pad Calendar", "Academic Planner", "Monthly Planner Refill"],
        ["twin-wire binding", "ruled daily blocks", "tabbed months", "durable cover", "12-month layout"],
    ),
    (
        "Art & Craft Supplies",
        ["Colored Pencils", "Watercolor Set", "Sketch Pad", "Craft Scissors", "Acrylic Paint Set"],
        ["rich pigments", "blendable colors", "heavyweight paper", "ergonomic handles", "non-toxic"],
    ),
]
_BRANDS = [
    "Acme",
    "Northstar",
    "Papyra",
    "Scriptix",
    "OfficeLine",
    "Brightwork",
    "Deskwise",
    "Colorama",
    "Staplex",
    "Inkwell",
    "Filemate",
    "Clarity",
]
_ADJECTIVES = ["Premium", "Classic", "Pro", "Essentials", "Heavy Duty", "Compact", "Deluxe", "Eco", "Ultra", "Value"]
_COLORS = ["Black", "Blue", "Assorted Colors", "White", "Red", "Clear", "Green", "Silver"]
_PACKS = [1, 2, 3, 4, 5, 6, 10, 12, 24, 36]
_START = int(datetime(2014, 1, 1, tzinfo=timezone.utc).timestamp())
_SPAN_DAYS = 4 * 365
_DAY = 86400


def _asin(rng: np.random.Generator) -> str:
    return "B0" + "".join(rng.choice(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), size=8))


def _make_items(s: SyntheticSettings, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """Item metadata records and each item's category index, items ordered by category."""
    n_cat = min(s.n_categories, len(_CATEGORIES))
    if s.n_categories > len(_CATEGORIES):
        raise ValueError(f"synthetic: n_categories is at most {len(_CATEGORIES)}, got {s.n_categories}")
    cats = np.sort(np.arange(s.n_items) % n_cat)
    meta, seen = [], set()
    for i, c in enumerate(cats):
        name, nouns, feats = _CATEGORIES[c]
        while True:
            brand = _BRANDS[rng.integers(len(_BRANDS))]
            noun = nouns[rng.integers(len(nouns))]
            adj = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
            color = _COLORS[rng.integers(len(_COLORS))]
            pack = _PACKS[rng.integers(len(_PACKS))]
            title = f"{brand} {adj} {noun}, {color}, {pack}-Pack"
            if title not in seen:
                seen.add(title)
                break
        chosen = rng.choice(len(feats), size=3, replace=False)
        desc = [
            f"{brand} {noun.lower()} for home and office.",
            " ".join(f"{feats[k].capitalize()}." for k in chosen),
            f"Model {brand[:3].upper()}-{i:04d}.",
        ]
        meta.append(
            {
                "asin": _asin(rng),
                "title": title,
                "description": desc,
                "brand": brand,
                "category": ["Office Products", name, noun],
                "price": f"${rng.uniform(2, 80):.2f}",
            }
        )
    return meta, cats


def generate_amazon_records(s: SyntheticSettings) -> tuple[list[dict], list[dict]]:
    """Generate raw review and metadata records in the Amazon Reviews 2018 schema.

    Args:
        s: generator settings; the same settings always give the same records.

    Returns:
        ``(reviews, meta)``: lists of dicts as found in ``{Cat}.json`` and ``meta_{Cat}.json``.
    """
    rng = np.random.default_rng(s.seed)
    meta, cats = _make_items(s, rng)
    n_cat = int(cats.max()) + 1
    # Global popularity: Zipf over a random permutation, so popular items spread over categories.
    ranks = rng.permutation(s.n_items) + 1
    pop = ranks.astype(float) ** -s.popularity_skew
    pop /= pop.sum()
    members = [np.flatnonzero(cats == c) for c in range(n_cat)]
    reviews = []
    for _ in range(s.n_users):
        # Concentrated taste: one or two favourite categories.
        alpha = np.full(n_cat, 0.05)
        alpha[rng.choice(n_cat, size=int(rng.integers(1, 3)), replace=False)] = 2.0
        taste = rng.dirichlet(alpha)
        n = int(rng.integers(s.min_reviews, s.max_reviews + 1))
        t = _START + int(rng.integers(0, _SPAN_DAYS)) * _DAY
        last_in_cat: dict[int, int] = {}
        user_id = "A" + "".join(rng.choice(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), size=13))
        for _ in range(n):
            if rng.random() < s.taste_strength:
                c = int(rng.choice(n_cat, p=taste))
                m = members[c]
                if c in last_in_cat and rng.random() < s.sequel_strength:
                    pos = int(np.flatnonzero(m == last_in_cat[c])[0])
                    item = int(m[(pos + 1) % len(m)])
                else:
                    w = pop[m] / pop[m].sum()
                    item = int(rng.choice(m, p=w))
            else:
                item = int(rng.choice(s.n_items, p=pop))
            last_in_cat[int(cats[item])] = item
            rating = float(rng.choice([3.0, 4.0, 5.0], p=[0.1, 0.3, 0.6]))
            reviews.append(
                {
                    "overall": rating,
                    "verified": True,
                    "reviewerID": user_id,
                    "asin": meta[item]["asin"],
                    "reviewTime": datetime.fromtimestamp(t, timezone.utc).strftime("%m %d, %Y"),
                    "unixReviewTime": t,
                    "reviewText": f"Good {meta[item]['category'][2].lower()}.",
                    "summary": "Works as described" if rating >= 4 else "Okay",
                }
            )
            t += int(rng.integers(1, 60)) * _DAY
    log.info(
        "synthetic: %d reviews by %d users of %d items in %d categories", len(reviews), s.n_users, s.n_items, n_cat
    )
    return reviews, meta


def prepare_synthetic(s: SyntheticSettings) -> tuple[dict[int, dict], dict[str, pd.DataFrame], dict]:
    """Generate the synthetic dataset and process it exactly as raw Amazon 2018 files.

    Returns:
        ``(items, splits, stats)`` as :func:`genrec.data.amazon.prepare_amazon` returns them.
    """
    from genrec.data.amazon import preprocess_amazon
    from genrec.data.sequences import split_frames

    reviews, meta = generate_amazon_records(s)
    amazon = AmazonSettings(
        reviews="<synthetic>",
        meta="<synthetic>",
        user_k=s.user_k,
        item_k=s.item_k,
        start="2000-01",
        end="2030-01",
        max_history=s.max_history,
    )
    items, split, stats = preprocess_amazon(reviews, meta, amazon)
    return items, split_frames(split, items), {"generator": s.to_dict(), **stats}
