"""Deterministic generator of Amazon Review Data (2018) style video-game files.

The output is the embedded default data set (``make demo``, most tests) and the input of the
ingestion benchmarks, so it must look like the real thing *and* carry structure a sequential
recommender can learn:

* Catalog: games grouped into 12 genres and franchises with 1-6 installments released on 1-3
  of 8 platforms ("Starfall Chronicles III - PlayStation 4"), plus per-platform accessories.
  Item popularity follows a Zipf-like law over franchises, so a few items dominate.
* Users: a sparse taste over 1-3 genres, a primary platform (sometimes a secondary one) and
  5-50 interactions (mean ~9.5).
* Sequences: after installment k the next item is often installment k+1 on the same platform;
  otherwise the user stays in the previous item's genre and platform, buys an accessory for
  that platform, or draws a fresh genre from their taste. Nobody buys the same item twice.

Everything is drawn from seeded PCG64 streams keyed by (seed, purpose, chunk), so the same
arguments give byte-identical files, and users are generated and written in fixed-size chunks
so memory stays bounded whatever ``num_interactions`` is. Review lines are shuffled within each
chunk, so a reader has to sort by time to recover the sequences.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import itertools
import json
import sys
from dataclasses import dataclass
from typing import IO, Sequence

import fsspec
import numpy as np

__all__ = ["SyntheticSummary", "generate", "main"]

# ----------------------------------------------------------------------------------------------
# Vocabulary. Everything below is fictional; lists are tuples so the module stays immutable.
# ----------------------------------------------------------------------------------------------

PLATFORMS = (
    "PlayStation 4", "Xbox One", "Nintendo Switch", "PC",
    "PlayStation 3", "Xbox 360", "Nintendo 3DS", "Wii U",
)
_PLATFORM_WEIGHTS = np.array([0.24, 0.18, 0.16, 0.15, 0.08, 0.08, 0.06, 0.05])


@dataclass(frozen=True)
class _Genre:
    name: str
    phrase: str  # how the description names it: "A ... for PC."
    prefixes: tuple[str, ...]
    nouns: tuple[str, ...]
    blurbs: tuple[str, ...]
    weight: float  # relative share of user tastes


GENRES = (
    _Genre("RPG", "role-playing game",
           ("Starfall", "Ember", "Rune", "Crystal", "Dragon", "Shadow", "Eternal", "Mythic",
            "Arcane", "Silver", "Oath", "Wyrm"),
           ("Chronicles", "Saga", "Legends", "Tales", "Odyssey", "Quest", "Covenant", "Fantasia"),
           ("Build a party of heroes and explore a vast world.",
            "Craft gear, learn spells and shape the story.",
            "Over 60 hours of quests and side stories."), 1.3),
    _Genre("Racing", "racing game",
           ("Kart", "Turbo", "Nitro", "Drift", "Apex", "Velocity", "Road", "Burnout", "Redline",
            "Throttle", "Dirt", "Torque"),
           ("Rivals", "Rush", "Circuit", "Grand Prix", "Racers", "Motorsport", "Kings", "Derby"),
           ("Race rivals across 30 tracks in split-screen.",
            "Tune your ride and master every drift.",
            "Online races for up to 12 players."), 1.0),
    _Genre("Shooter", "first-person shooter",
           ("Iron", "Steel", "Black", "Strike", "Ghost", "Delta", "Vanguard", "Zero", "Bullet",
            "Hardline", "Titan", "Sentinel"),
           ("Ops", "Warfare", "Front", "Recon", "Siege", "Squadron", "Protocol", "Division"),
           ("Lead your squad through a tense campaign.",
            "Competitive online multiplayer with ranked modes.",
            "Unlock weapons, perks and loadouts."), 1.3),
    _Genre("Platformer", "platformer",
           ("Super", "Pixel", "Bouncy", "Sky", "Jumpin'", "Tiny", "Rocket", "Bubble", "Captain",
            "Sunny", "Lucky", "Noodle"),
           ("Hero", "Adventures", "Island", "Bros", "Run", "Dash", "Land", "Jump"),
           ("Run, jump and collect stars across colorful worlds.",
            "Local co-op for up to four players.",
            "Hidden secrets in every level."), 0.9),
    _Genre("Sports", "sports game",
           ("Pro", "Ultimate", "Slam", "All-Star", "Champion", "World", "Major", "Power",
            "Legends", "Premier", "Fantasy", "Street"),
           ("Soccer", "Basketball", "Golf", "Tennis", "Hockey", "Football", "Baseball", "Boxing"),
           ("Updated rosters and authentic stadiums.",
            "Build your dream team in career mode.",
            "Play online seasons with friends."), 1.0),
    _Genre("Fighting", "fighting game",
           ("Fist", "Blade", "Tekno", "Brawler", "Knuckle", "Dragon", "Ronin", "Thunder",
            "Cyber", "Savage", "Kung", "Iron"),
           ("Fury", "Showdown", "Brawl", "Kombat", "Clash", "Arena", "Duel", "Tournament"),
           ("A roster of 30 fighters with unique combos.",
            "Arcade, story and online ranked modes.",
            "Easy to learn, hard to master."), 0.7),
    _Genre("Strategy", "strategy game",
           ("Empire", "Galactic", "Crown", "Total", "Imperial", "Age of", "Throne", "Banner",
            "Stellar", "Legion", "Dynasty", "Kingdom"),
           ("Conquest", "Dominion", "Command", "Tactics", "Realms", "Frontiers", "Wars", "Rule"),
           ("Command armies and manage your economy.",
            "Turn-based battles on generated maps.",
            "Outwit rival empires through diplomacy or war."), 0.7),
    _Genre("Puzzle", "puzzle game",
           ("Block", "Gem", "Brain", "Color", "Word", "Mind", "Cube", "Tile", "Marble", "Prism",
            "Hex", "Pocket"),
           ("Puzzle", "Match", "Logic", "Twist", "Blocks", "Drop", "Quest", "Mania"),
           ("Hundreds of handcrafted puzzles.",
            "Relaxing modes and timed challenges.",
            "Great for short play sessions."), 0.5),
    _Genre("Horror", "survival horror game",
           ("Dead", "Silent", "Dark", "Night", "Blood", "Hollow", "Grim", "Crimson", "Pale",
            "Rotten", "Wicked", "Ashen"),
           ("Manor", "Harvest", "Asylum", "Echoes", "Outbreak", "Hours", "Woods", "Signal"),
           ("Survive the night with limited supplies.",
            "Atmospheric sound and tense exploration.",
            "Not for the faint of heart."), 0.6),
    _Genre("Simulation", "simulation game",
           ("Farm", "City", "Flight", "Train", "Space", "Truck", "Zoo", "Harbor", "Hospital",
            "Pizza", "Ranch", "Airport"),
           ("Simulator", "Tycoon", "Builder", "Life", "Manager", "Story", "Valley", "Empire"),
           ("Build, manage and grow at your own pace.",
            "Realistic physics and detailed controls.",
            "A sandbox mode with no limits."), 0.7),
    _Genre("Adventure", "action-adventure game",
           ("Lost", "Hidden", "Secret", "Ancient", "Sunken", "Forgotten", "Jade", "Golden",
            "Wandering", "Distant", "Broken", "Uncharted"),
           ("Expedition", "Relic", "Journey", "Temple", "Treasure", "Voyage", "Horizon", "Isles"),
           ("Explore ancient ruins and solve riddles.",
            "A cinematic story with memorable characters.",
            "Climb, swim and glide across a huge world."), 1.2),
    _Genre("Music", "rhythm game",
           ("Rock", "Dance", "Beat", "Rhythm", "Guitar", "DJ", "Disco", "Groove", "Karaoke",
            "Drum", "Synth", "Neon"),
           ("Revolution", "Hero", "Party", "Star", "Fever", "Legends", "Band", "Mix"),
           ("Play along to over 40 licensed tracks.",
            "Compatible with instrument controllers.",
            "Party mode for up to eight players."), 0.4),
)
# Optional first word, used once the two-word names of a genre run out.
_MODIFIERS = (
    "Neon", "Lunar", "Crimson", "Frozen", "Royal", "Wild", "Hyper", "Final", "Grand", "Primal",
    "Cosmic", "Storm", "Phantom", "Solar", "Rogue", "Atomic", "Infinite", "Blazing", "Twin", "New",
)
_SUBTITLES = (
    "Ashes of Dawn", "Rise of the Fallen", "Endless Night", "The Lost Crown", "Reckoning",
    "Awakening", "Beyond the Stars", "Uprising", "Legacy", "Eclipse", "Origins", "Requiem",
    "Shattered Skies", "Deep Frontier", "Second Sun", "The Iron Tide",
)
_ROMAN = ("", "I", "II", "III", "IV", "V", "VI")
_EDITIONS = ("Deluxe", "Remastered", "Game of the Year Edition", "Complete Edition",
             "Collector's Edition")
_PUBLISHERS = (
    "Nimbus Interactive", "Redshift Games", "Blue Comet Studios", "Ironclad Entertainment",
    "Pixelforge", "Lumen Works", "Harbor Digital", "Quasar Soft", "Northwind Games",
    "Vertex Interactive", "Sunburst Studios", "Moonlit Games", "Arcadia Publishing",
    "Tidal Wave Entertainment", "Granite Games", "Falcon Digital", "Cobalt Interactive",
    "Emberforge", "Stormcrow Studios", "Orbit Entertainment", "Kitsune Works", "Halcyon Media",
    "Paper Crane Games", "Big Anvil",
)
_ACCESSORY_BRANDS = ("PowerArc", "HexaGear", "Voltline", "GripTech", "Aurora Peripherals",
                     "Zenith Audio")
_ACCESSORIES = (  # (product type, Amazon sub-category, blurb)
    ("Wireless Controller", "Controllers", "Low-latency wireless with 20 hours of battery."),
    ("Charging Dock", "Chargers", "Charges two controllers at once."),
    ("Gaming Headset", "Headsets", "Surround sound with a noise-cancelling mic."),
    ("Carrying Case", "Cases & Storage", "Hard shell case with room for 12 games."),
    ("Screen Protector", "Screen Protectors", "Tempered glass, bubble-free install."),
    ("Racing Wheel", "Controllers", "Force feedback wheel with pedals."),
    ("Memory Card", "Memory", "Extra storage for saves and downloads."),
    ("Thumb Grips", "Controllers", "Set of 8 silicone grips for better control."),
    ("HDMI Cable", "Cables", "High speed 4K cable, 6 feet."),
    ("Skin Sticker", "Faceplates, Protectors & Skins", "Vinyl skin with a matte finish."),
)
_MODELS = ("", " Pro", " Elite", " X2", " Plus", " Lite", " 2.0")
_STYLE_PHRASES = ("An epic", "A fast-paced", "A charming", "A challenging", "A cinematic",
                  "A beautifully crafted", "A family-friendly", "An ambitious")
_GAME_PRICES = np.array([1999, 2999, 3999, 4999, 5999])
_GAME_PRICE_P = np.array([0.2, 0.25, 0.2, 0.15, 0.2])
_ACC_PRICES = np.array([999, 1499, 1999, 2499, 3499, 4999, 5999])

# Review texts and summaries, five per star rating so an index is ``(stars - 1) * 5 + k``.
_REVIEW_TEXTS = (
    ("Waste of money.", "Did not work.", "Broke after a week.", "Boring and buggy.",
     "Returned it."),
    ("Not great.", "Got boring fast.", "Disappointing.", "Too short for the price.",
     "Controls feel off."),
    ("It's okay.", "Average at best.", "Decent, some bugs.", "Fun for a while.",
     "Mixed feelings."),
    ("Pretty good overall.", "Fun but short.", "Solid purchase.", "Good value.",
     "My son likes it."),
    ("Great game!", "Loved every minute.", "My kids love it.", "Best in the series.",
     "Works perfectly."),
)
_SUMMARIES = (
    ("One Star", "One Star", "Avoid", "Terrible", "Not recommended"),
    ("Two Stars", "Two Stars", "Meh", "Could be better", "Disappointed"),
    ("Three Stars", "Three Stars", "OK", "Average", "It's fine"),
    ("Four Stars", "Four Stars", "Good", "Fun", "Recommended"),
    ("Five Stars", "Five Stars", "Awesome", "Love it", "Great"),
)
_RATING_P = np.array([0.06, 0.05, 0.09, 0.20, 0.60])
_FIRST_NAMES = (
    "James", "Mary", "John", "Linda", "Michael", "Sarah", "David", "Karen", "Chris", "Jessica",
    "Daniel", "Ashley", "Matthew", "Emily", "Anthony", "Megan", "Kevin", "Laura", "Brian",
    "Nicole", "Jason", "Rachel", "Ryan", "Amanda", "Eric", "Heather", "Tyler", "Stephanie",
    "José", "Zoë", "Björn", "Chloé", "Renée", "Łukasz", "Yuki", "Priya", "Wei", "Aiden",
    "Olivia", "Noah",
)
_GAMER_TAGS = ("GamerDad", "PixelQueen", "xXSniperXx", "RetroFan", "NightOwl", "LootGoblin",
               "CouchCoop", "SpeedRunner")

# ----------------------------------------------------------------------------------------------
# Behaviour knobs of the sequence model (probabilities per step).
# ----------------------------------------------------------------------------------------------

_ACCESSORY_FRACTION = 0.06  # share of the catalog that is accessories
_P_SEQUEL = 0.5  # next item is the next installment, when the previous game has one
_P_STICK = 0.45  # otherwise: same genre and platform as the previous game
_P_ACCESSORY = 0.08  # otherwise: an accessory for the previous item's platform
_P_PRIMARY_PLATFORM = 0.85  # fresh picks use the user's primary platform, else the secondary
_MIN_LEN, _MAX_LEN, _LEN_GEOMETRIC_P = 5, 50, 1 / 5.5  # length = 4 + Geometric, mean ~9.5
_MAX_GAP_DAYS, _MEAN_GAP_DAYS = 45, 11.0  # 49 gaps of <= 45 days fit in the 2012-2018 window
_CHUNK_USERS = 8192  # users generated (and held) at once; fixed, so output never depends on it
_MIN_ITEMS = 100  # enough for one franchise per genre, accessories per platform, no-repeat draws

_EPOCH_2012 = 1325376000  # 2012-01-01T00:00:00Z
_SPAN_DAYS = 2557  # 2012-01-01 .. 2018-12-31
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Stream keys: each purpose draws from its own generator, so e.g. missing titles never change
# the reviews, and chunk k's draws do not depend on how chunk k-1 used its generator.
_S_CATALOG, _S_CHUNK, _S_META, _S_IDS = 1, 2, 3, 4


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate` wrote."""

    num_users: int
    num_items: int  # catalog size (items in meta), not only the reviewed ones
    num_interactions: int  # review lines, over all shards
    review_files: list[str]
    meta_file: str


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent PCG64 stream for (seed, *key)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


# ----------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    """Item attributes as parallel arrays; text is rendered lazily by :func:`_item_meta`."""

    asin: list[str]
    genre: np.ndarray  # genre index; len(GENRES) for accessories
    platform: np.ndarray
    franchise: np.ndarray  # -1 for accessories
    installment: np.ndarray  # 1-based; 0 for accessories
    next_item: np.ndarray  # same franchise, installment + 1, same platform; -1 if none
    weight: np.ndarray  # popularity, only compared within a sampling group
    price_cents: np.ndarray
    variant: np.ndarray  # edition index + 1 (games) or accessory type (accessories)
    brand: np.ndarray  # publisher (games) or accessory brand index
    text_seed: np.ndarray  # picks description phrases / accessory model
    franchise_name: list[str]
    franchise_style: np.ndarray  # 0 roman, 1 arabic, 2 subtitle, 3 year
    franchise_extra: np.ndarray  # subtitle offset or first year
    franchise_suffix: np.ndarray  # bool: titles end in " - Platform"

    @property
    def size(self) -> int:
        return len(self.asin)


def _franchise_names(rng: np.random.Generator, genre: np.ndarray) -> list[str]:
    """Names per franchise: two-word genre names first, then with a modifier, then repeats."""
    names = [""] * len(genre)
    for g, spec in enumerate(GENRES):
        members = np.flatnonzero(genre == g)
        base = len(spec.prefixes) * len(spec.nouns)
        codes = rng.permutation(base)
        if len(members) > base:  # rare: only catalogs of tens of thousands of items
            extra = base + rng.permutation(base * len(_MODIFIERS))
            codes = np.concatenate([codes, extra])
        codes = np.resize(codes, len(members))  # wraps around (repeats) only for huge catalogs
        for f, code in zip(members.tolist(), codes.tolist()):
            mod, rest = divmod(code, base)
            pre, noun = divmod(rest, len(spec.nouns))
            lead = f"{_MODIFIERS[mod - 1]} " if mod else ""
            names[f] = f"{lead}{spec.prefixes[pre]} {spec.nouns[noun]}"
    return names


def _gumbel_top(rng: np.random.Generator, weights: np.ndarray, rows: int) -> np.ndarray:
    """Per row, all columns ordered as a weighted sample without replacement (Gumbel top-k)."""
    keys = np.log(weights)[None, :] + rng.gumbel(size=(rows, len(weights)))
    return np.argsort(-keys, axis=1, kind="stable")


def _games(rng: np.random.Generator, n_games: int) -> dict[str, np.ndarray]:
    """Game items, franchise by franchise: installment-major, one item per platform."""
    nf = n_games  # every franchise has at least one item, so this many always suffice
    genre_w = np.array([g.weight for g in GENRES])
    f_genre = rng.choice(len(GENRES), size=nf, p=genre_w / genre_w.sum())
    n_inst = np.minimum(rng.geometric(0.45, size=nf), 6)
    n_plat = rng.choice([1, 2, 3], size=nf, p=[0.45, 0.35, 0.2])
    # Every genre has a franchise: the first 12 take one each and are kept small enough
    # (<= 6 items) to all fit in the smallest catalog.
    f_genre[: len(GENRES)] = np.arange(len(GENRES))
    n_inst[: len(GENRES)] = np.minimum(n_inst[: len(GENRES)], 3)
    n_plat[: len(GENRES)] = np.minimum(n_plat[: len(GENRES)], 2)
    plat_order = _gumbel_top(rng, _PLATFORM_WEIGHTS, nf)
    sizes = n_inst * n_plat
    ends = np.cumsum(sizes)
    used = int(np.searchsorted(ends, n_games)) + 1  # franchises needed; the last one is cut
    fr = np.repeat(np.arange(used), sizes[:used])[:n_games]
    offset = np.arange(n_games) - (ends[fr] - sizes[fr])
    inst = offset // n_plat[fr] + 1
    nxt = np.arange(n_games) + n_plat[fr]
    nxt = np.where((nxt < np.minimum(ends[fr], n_games)), nxt, -1)
    rank = rng.permutation(used) + 1  # Zipf over franchises: weight 1/rank
    weight = (1.0 / rank[fr]) * 0.85 ** (inst - 1) * rng.lognormal(0.0, 0.4, size=n_games)
    return {
        "franchise": fr, "installment": inst, "next_item": nxt, "weight": weight,
        "genre": f_genre[fr], "platform": plat_order[fr, offset % n_plat[fr]],
        "f_genre": f_genre[:used],
    }


def _build_catalog(num_items: int, seed: int) -> _Catalog:
    """All items of the catalog: games first, then accessories; asins scrambled."""
    rng = _rng(seed, _S_CATALOG)
    n_acc = max(2 * len(PLATFORMS), round(_ACCESSORY_FRACTION * num_items))
    n_games = num_items - n_acc
    g = _games(rng, n_games)
    nf = len(g["f_genre"])
    acc_plat = rng.choice(len(PLATFORMS), size=n_acc, p=_PLATFORM_WEIGHTS)
    acc_plat[: len(PLATFORMS)] = np.arange(len(PLATFORMS))  # every platform has accessories
    acc_weight = 1.0 / (rng.permutation(n_acc) + 1)
    sports = g["f_genre"] == next(i for i, s in enumerate(GENRES) if s.name == "Sports")
    style = np.where(sports, 3, rng.integers(0, 3, size=nf))
    extra = np.where(sports, rng.integers(2012, 2016, size=nf), rng.integers(0, 1000, size=nf))
    # Publishers specialise: each genre draws from a window of four publishers.
    publisher = (g["f_genre"] * 2 + rng.integers(0, 4, size=nf)) % len(_PUBLISHERS)
    edition = np.where(rng.random(n_games) < 0.08, rng.integers(1, len(_EDITIONS) + 1, n_games), 0)
    return _Catalog(
        asin=_encode_ids(0, num_items, 8, "B0", int(_rng(seed, _S_IDS, 0).integers(2**62))),
        genre=np.concatenate([g["genre"], np.full(n_acc, len(GENRES))]),
        platform=np.concatenate([g["platform"], acc_plat]),
        franchise=np.concatenate([g["franchise"], np.full(n_acc, -1)]),
        installment=np.concatenate([g["installment"], np.zeros(n_acc, dtype=np.int64)]),
        next_item=np.concatenate([g["next_item"], np.full(n_acc, -1)]),
        weight=np.concatenate([g["weight"], acc_weight]),
        price_cents=np.concatenate([rng.choice(_GAME_PRICES, size=n_games, p=_GAME_PRICE_P),
                                    rng.choice(_ACC_PRICES, size=n_acc)]),
        variant=np.concatenate([edition, rng.integers(0, len(_ACCESSORIES), size=n_acc)]),
        brand=np.concatenate([publisher[g["franchise"]],
                              rng.integers(0, len(_ACCESSORY_BRANDS), size=n_acc)]),
        text_seed=rng.integers(0, 2**31, size=num_items),
        franchise_name=_franchise_names(rng, g["f_genre"]),
        franchise_style=style, franchise_extra=extra,
        franchise_suffix=rng.random(nf) < 0.6,
    )


def _encode_ids(start: int, count: int, width: int, prefix: str, offset: int) -> list[str]:
    """Unique Amazon-looking ids for indices ``start .. start+count-1``: a bijection of the
    index onto ``width`` (<= 12, so codes fit in uint64) base-36 digits, scrambled by seed."""
    modulus = 36**width
    # A Weyl step near modulus / golden ratio spreads consecutive indices over all digits; it
    # must be coprime to 36 (odd, not a multiple of 3) for the map to be a bijection.
    step = int(modulus * 0.6180339887498949)
    step += (1, 0, 3, 2, 1, 0)[step % 6]  # next value that is 1 or 5 mod 6
    offset %= modulus
    # Python ints for the product (it overflows 64 bits), numpy for the digits.
    codes = np.array([(i * step + offset) % modulus for i in range(start, start + count)],
                     dtype=np.uint64)
    alphabet = np.frombuffer(_ALPHABET.encode("ascii"), dtype=np.uint8)
    chars = np.empty((count, width), dtype=np.uint8)
    for j in range(width - 1, -1, -1):
        codes, digit = np.divmod(codes, np.uint64(36))
        chars[:, j] = alphabet[digit]
    return [prefix + s for s in chars.view(f"S{width}").ravel().astype(str).tolist()]


def _game_title(cat: _Catalog, i: int) -> str:
    f, k = int(cat.franchise[i]), int(cat.installment[i])
    name, style, extra = cat.franchise_name[f], cat.franchise_style[f], cat.franchise_extra[f]
    if style == 3:
        title = f"{name} {extra + k - 1}"
    elif k == 1:
        title = name
    elif style == 0:
        title = f"{name} {_ROMAN[k]}"
    elif style == 1:
        title = f"{name} {k}"
    else:
        title = f"{name}: {_SUBTITLES[(extra + k) % len(_SUBTITLES)]}"
    if cat.variant[i]:
        title = f"{title} {_EDITIONS[cat.variant[i] - 1]}"
    if cat.franchise_suffix[f]:
        title = f"{title} - {PLATFORMS[cat.platform[i]]}"
    return title


def _ordinal(k: int) -> str:
    return f"{k}{('th', 'st', 'nd', 'rd')[k] if k < 4 else 'th'}"  # installments stop at 6


def _item_meta(cat: _Catalog, i: int, with_title: bool) -> dict:
    """The Amazon 2018 metadata record of item ``i``."""
    platform = PLATFORMS[cat.platform[i]]
    seed = int(cat.text_seed[i])
    if cat.franchise[i] >= 0:
        spec = GENRES[cat.genre[i]]
        title = _game_title(cat, i)
        brand = _PUBLISHERS[cat.brand[i]]
        category = ["Video Games", platform, "Games"]
        lead = f"{_STYLE_PHRASES[seed % len(_STYLE_PHRASES)]} {spec.phrase} for {platform}."
        k = int(cat.installment[i])
        if k > 1:
            series = cat.franchise_name[cat.franchise[i]]
            second = f"The {_ordinal(k)} installment in the {series} series."
        else:
            second = spec.blurbs[(seed >> 4) % len(spec.blurbs)]
        description = [lead, second] if (seed >> 8) % 3 else [lead]
    else:
        kind, sub, blurb = _ACCESSORIES[cat.variant[i]]
        brand = _ACCESSORY_BRANDS[cat.brand[i]]
        title = f"{brand} {kind}{_MODELS[seed % len(_MODELS)]} - {platform}"
        category = ["Video Games", platform, "Accessories", sub]
        description = [blurb, f"Compatible with {platform}."]
    price = int(cat.price_cents[i])
    record = {"asin": cat.asin[i], "title": title, "brand": brand, "category": category,
              "description": description, "price": f"${price // 100}.{price % 100:02d}"}
    if not with_title:
        del record["title"]
    return record


# ----------------------------------------------------------------------------------------------
# Sampling groups
# ----------------------------------------------------------------------------------------------


class _GroupSampler:
    """Popularity-weighted draws of an item from a group, vectorised over many draws.

    Groups: (genre, platform) of games, genre of games on any platform, and accessories per
    platform. Items of a group are contiguous in one array with a running weight sum, so a draw
    is a ``searchsorted`` of a uniform scaled into the group's slice of that sum.
    """

    def __init__(self, cat: _Catalog) -> None:
        ng, npl = len(GENRES), len(PLATFORMS)
        games = np.flatnonzero(cat.franchise >= 0)
        accs = np.flatnonzero(cat.franchise < 0)
        self.genre_any = ng * npl  # first group id of "genre on any platform"
        self.accessory = ng * npl + ng  # first group id of "accessories of a platform"
        keys = np.concatenate([cat.genre[games] * npl + cat.platform[games],
                               self.genre_any + cat.genre[games],
                               self.accessory + cat.platform[accs]])
        members = np.concatenate([games, games, accs])
        order = np.argsort(keys, kind="stable")
        self.items, keys = members[order], keys[order]
        self.cum = np.cumsum(cat.weight[self.items])
        counts = np.bincount(keys, minlength=self.accessory + npl)
        self.end = np.cumsum(counts)
        self.start = self.end - counts
        self.lo = np.where(self.start > 0, self.cum[np.maximum(self.start - 1, 0)], 0.0)
        self.hi = self.cum[np.maximum(self.end - 1, 0)]
        # (genre, platform) pairs without games fall back to the genre on any platform.
        gp = np.arange(ng * npl)
        self.gp_group = np.where(counts[gp] > 0, gp, self.genre_any + gp // npl).reshape(ng, npl)

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        target = self.lo[groups] + rng.random(len(groups)) * (self.hi[groups] - self.lo[groups])
        pos = np.searchsorted(self.cum, target, side="right")
        return self.items[np.clip(pos, self.start[groups], self.end[groups] - 1)]


# ----------------------------------------------------------------------------------------------
# Users and sequences
# ----------------------------------------------------------------------------------------------


def _fit_lengths(lengths: np.ndarray, remaining: int) -> np.ndarray:
    """Cut a chunk's lengths so totals hit ``remaining`` exactly, every user keeping >= 5."""
    left = remaining - np.cumsum(lengths)
    stop = np.flatnonzero(left < _MIN_LEN)
    if len(stop) == 0:
        return lengths
    j = int(stop[0])
    lengths = lengths[: j + 1].copy()
    # Users before j leave >= 5 behind, so user j gets >= 5; it absorbs a tail of 1-4 too.
    lengths[j] = remaining - int(lengths[:j].sum())
    return lengths


def _tastes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Cumulative genre mixtures over 1-3 genres per user, shape (n, genres)."""
    genre_w = np.array([g.weight for g in GENRES])
    order = _gumbel_top(rng, genre_w, n)
    k = rng.choice([1, 2, 3], size=n, p=[0.35, 0.45, 0.2])
    mix = np.zeros((n, len(GENRES)))
    rows = np.arange(n)
    for j in range(3):
        mix[rows, order[:, j]] = np.where(j < k, rng.gamma(1.0, size=n), 0.0)
    cum = np.cumsum(mix, axis=1)
    return cum / cum[:, -1:]


class _Users:
    """Per-chunk user state, drawn up front so each step only needs a few uniforms."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.taste = _tastes(rng, n)
        plat = _gumbel_top(rng, _PLATFORM_WEIGHTS, n)
        self.primary, self.secondary = plat[:, 0], plat[:, 1]

    def fresh_group(self, sampler: _GroupSampler, who: np.ndarray, rng: np.random.Generator,
                    any_platform: bool = False) -> np.ndarray:
        """A group from a user's taste: genre from the mixture, mostly the primary platform."""
        genre = (rng.random(len(who))[:, None] > self.taste[who]).sum(axis=1)
        genre = np.minimum(genre, len(GENRES) - 1)  # guard against rounding at 1.0
        if any_platform:
            return sampler.genre_any + genre
        primary = rng.random(len(who)) < _P_PRIMARY_PLATFORM
        platform = np.where(primary, self.primary[who], self.secondary[who])
        return sampler.gp_group[genre, platform]


def _next_items(cat: _Catalog, sampler: _GroupSampler, users: _Users, prev: np.ndarray | None,
                who: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One proposal per active user: sequel, same genre/platform, accessory or fresh taste."""
    group = users.fresh_group(sampler, who, rng)
    if prev is None:
        return sampler.draw(group, rng)
    r = rng.random(len(who))
    stick = (r < _P_STICK) & (cat.franchise[prev] >= 0)
    group = np.where(stick, sampler.gp_group[np.minimum(cat.genre[prev], len(GENRES) - 1),
                                             cat.platform[prev]], group)
    accessory = (r >= _P_STICK) & (r < _P_STICK + _P_ACCESSORY)
    group = np.where(accessory, sampler.accessory + cat.platform[prev], group)
    items = sampler.draw(group, rng)
    sequel = (cat.next_item[prev] >= 0) & (rng.random(len(who)) < _P_SEQUEL)
    return np.where(sequel, cat.next_item[prev], items)


def _dedupe(items: np.ndarray, history: np.ndarray, sampler: _GroupSampler, users: _Users,
            who: np.ndarray, num_items: int, rng: np.random.Generator) -> np.ndarray:
    """Redraw items a user already has: from their taste (any platform), then uniformly."""
    for attempt in range(10_000):
        dup = np.flatnonzero((history == items[:, None]).any(axis=1))
        if len(dup) == 0:
            return items
        if attempt < 3:
            redraw = sampler.draw(users.fresh_group(sampler, who[dup], rng, True), rng)
        else:  # tiny groups can be exhausted; catalog >= 100 items > any history
            redraw = rng.integers(0, num_items, size=len(dup))
        items[dup] = redraw
    raise AssertionError("could not draw an unseen item")  # pragma: no cover


def _sequences(cat: _Catalog, sampler: _GroupSampler, lengths: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Item matrix (users, max length), -1 past each user's length; steps run in lockstep."""
    n, width = len(lengths), int(lengths.max())
    users = _Users(rng, n)
    hist = np.full((n, width), -1, dtype=np.int64)
    for t in range(width):
        who = np.flatnonzero(lengths > t)
        prev = hist[who, t - 1] if t else None
        items = _next_items(cat, sampler, users, prev, who, rng)
        hist[who, t] = _dedupe(items, hist[who, :t], sampler, users, who, cat.size, rng)
    return hist


def _days(rng: np.random.Generator, lengths: np.ndarray, width: int) -> np.ndarray:
    """Strictly increasing review days (since 2012-01-01) per user, inside 2012..2018."""
    n = len(lengths)
    gaps = 1 + np.minimum(np.floor(rng.exponential(_MEAN_GAP_DAYS, size=(n, width))),
                          _MAX_GAP_DAYS - 1).astype(np.int64)
    gaps[:, 0] = 0
    offsets = np.cumsum(gaps, axis=1)
    total = offsets[np.arange(n), lengths - 1]
    # u**0.6 skews first reviews towards later years, as Amazon grew.
    start = np.floor(rng.random(n) ** 0.6 * (_SPAN_DAYS - total)).astype(np.int64)
    return start[:, None] + offsets


# ----------------------------------------------------------------------------------------------
# Rendering and writing
# ----------------------------------------------------------------------------------------------


class _Tables:
    """Pre-rendered JSON fragments, so a review line is one f-string of lookups."""

    def __init__(self) -> None:
        day0 = datetime.date(2012, 1, 1)
        dates = [day0 + datetime.timedelta(days=d) for d in range(_SPAN_DAYS)]
        # Amazon writes the month zero-padded but not the day: "01 1, 2018".
        self.review_time = [f"{d.month:02d} {d.day}, {d.year}" for d in dates]
        self.unix = [str(_EPOCH_2012 + 86400 * d) for d in range(_SPAN_DAYS)]
        self.text = [_json(t) for stars in _REVIEW_TEXTS for t in stars]
        self.summary = [_json(s) for stars in _SUMMARIES for s in stars]
        names = ["Amazon Customer"] * 40 + list(_FIRST_NAMES)
        names += [f"{f} {chr(65 + i)}." for f in _FIRST_NAMES for i in range(26)]
        names += [f"{t}{n}" for t in _GAMER_TAGS for n in (7, 42, 99, 1984, 2000)]
        self.names = [_json(n) for n in names]


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


class _ShardWriter:
    """Appends lines to ``reviews-NNNNN.json[.gz]`` files of at most ``shard_lines`` lines."""

    def __init__(self, fs: fsspec.AbstractFileSystem, out_dir: str, shard_lines: int,
                 compress: bool) -> None:
        self.fs, self.out_dir, self.shard_lines, self.compress = fs, out_dir, shard_lines, compress
        self.paths: list[str] = []
        self.handle: _Output | None = None
        self.in_shard = 0

    def write(self, lines: list[str]) -> None:
        pos = 0
        while pos < len(lines):
            if self.handle is None or self.in_shard == self.shard_lines:
                self.close()
                path = f"{self.out_dir}/reviews-{len(self.paths):05d}.json{'.gz' * self.compress}"
                self.handle, self.in_shard = _Output(self.fs, path, self.compress), 0
                self.paths.append(path)
            take = min(len(lines) - pos, self.shard_lines - self.in_shard)
            self.handle.write_lines(lines[pos: pos + take])
            pos, self.in_shard = pos + take, self.in_shard + take

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class _Output:
    """A binary file on ``fs``, optionally gzip'ed with a fixed header (mtime 0, no name)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, compress: bool) -> None:
        self.raw: IO[bytes] = fs.open(path, "wb")
        self.out: IO[bytes] = (gzip.GzipFile(filename="", mode="wb", fileobj=self.raw,
                                             compresslevel=6, mtime=0)
                               if compress else self.raw)

    def write_lines(self, lines: list[str]) -> None:
        if lines:
            self.out.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self.out is not self.raw:
            self.out.close()  # flushes the gzip trailer; does not close the raw file
        self.raw.close()


def _review_lines(cat: _Catalog, tables: _Tables, first_user: int, seed: int,
                  lengths: np.ndarray, hist: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Render a chunk's reviews as JSON lines, in a seeded random order."""
    n, width = hist.shape
    days = _days(rng, lengths, width)
    mask = np.arange(width)[None, :] < lengths[:, None]
    user = np.nonzero(mask)[0]
    stars = rng.choice(5, size=len(user), p=_RATING_P)
    verified = rng.random(len(user)) < 0.87
    text = stars * 5 + rng.integers(0, 5, size=len(user))
    summary = stars * 5 + rng.integers(0, 5, size=len(user))
    name = rng.integers(0, len(tables.names), size=n).tolist()
    ids = _encode_ids(first_user, n, 12, "A",
                      int(_rng(seed, _S_IDS, 1).integers(2**62)))
    order = rng.permutation(len(user))
    cols = [a[order].tolist() for a in (user, hist[mask], days[mask], stars, verified, text,
                                        summary)]
    t = tables
    return [
        f'{{"overall": {s + 1}.0, "verified": {"true" if v else "false"}, '
        f'"reviewTime": "{t.review_time[d]}", "reviewerID": "{ids[u]}", '
        f'"asin": "{cat.asin[i]}", "reviewerName": {t.names[name[u]]}, '
        f'"reviewText": {t.text[x]}, "summary": {t.summary[y]}, "unixReviewTime": {t.unix[d]}}}'
        for u, i, d, s, v, x, y in zip(*cols)
    ]


def _write_meta(cat: _Catalog, fs: fsspec.AbstractFileSystem, path: str, compress: bool,
                missing_title_fraction: float, seed: int) -> None:
    """Write every catalog item; an exact ``round(fraction * items)`` of them lack a title."""
    missing = np.zeros(cat.size, dtype=bool)
    count = round(missing_title_fraction * cat.size)
    missing[_rng(seed, _S_META).choice(cat.size, size=count, replace=False)] = True
    out = _Output(fs, path, compress)
    try:
        for lo in range(0, cat.size, 10_000):
            out.write_lines([_json(_item_meta(cat, i, not missing[i]))
                             for i in range(lo, min(lo + 10_000, cat.size))])
    finally:
        out.close()


def _check_args(num_interactions: int, num_items: int, shard_lines: int,
                missing_title_fraction: float, seed: int) -> None:
    if num_interactions < _MIN_LEN:
        raise ValueError(f"num_interactions must be >= {_MIN_LEN}, got {num_interactions}")
    if num_items < _MIN_ITEMS:
        raise ValueError(f"num_items must be >= {_MIN_ITEMS}, got {num_items}")
    if shard_lines < 1:
        raise ValueError(f"shard_lines must be >= 1, got {shard_lines}")
    if not 0.0 <= missing_title_fraction <= 1.0:
        raise ValueError(f"missing_title_fraction must be in [0, 1], got {missing_title_fraction}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def generate(out_dir: str, num_interactions: int, seed: int = 0, *,
             num_items: int | None = None, shard_lines: int = 250_000, compress: bool = False,
             missing_title_fraction: float = 0.0,
             filesystem: fsspec.AbstractFileSystem | None = None) -> SyntheticSummary:
    """Write a synthetic Amazon 2018 video-games data set into ``out_dir``.

    Writes exactly ``num_interactions`` review lines into ``reviews-00000.json``, ... (at most
    ``shard_lines`` each; ``.json.gz`` with ``compress``) and the catalog into ``meta.json``
    (``.json.gz``). ``num_items`` defaults to ``max(200, num_interactions // 25)``; every user
    has >= 5 reviews and never reviews an item twice. Same arguments give byte-identical files;
    the reviews do not depend on ``shard_lines``, ``compress`` or ``missing_title_fraction``.
    Files are written to their final names through ``filesystem`` (default: local, creating
    ``out_dir``); making the result appear atomically is the caller's job.
    """
    num_items = max(200, num_interactions // 25) if num_items is None else num_items
    _check_args(num_interactions, num_items, shard_lines, missing_title_fraction, seed)
    fs = filesystem if filesystem is not None else fsspec.filesystem("file")
    out_dir = out_dir.rstrip("/") or "/"
    fs.makedirs(out_dir, exist_ok=True)
    cat = _build_catalog(num_items, seed)
    sampler, tables = _GroupSampler(cat), _Tables()
    writer = _ShardWriter(fs, out_dir, shard_lines, compress)
    users = written = 0
    try:
        for chunk in itertools.count():
            if written == num_interactions:
                break
            rng = _rng(seed, _S_CHUNK, chunk)
            lengths = _MIN_LEN - 1 + np.minimum(rng.geometric(_LEN_GEOMETRIC_P, _CHUNK_USERS),
                                                _MAX_LEN - _MIN_LEN + 1)
            lengths = _fit_lengths(lengths, num_interactions - written)
            hist = _sequences(cat, sampler, lengths, rng)
            writer.write(_review_lines(cat, tables, users, seed, lengths, hist, rng))
            users, written = users + len(lengths), written + int(lengths.sum())
    finally:
        writer.close()
    meta = f"{out_dir}/meta.json{'.gz' * compress}"
    _write_meta(cat, fs, meta, compress, missing_title_fraction, seed)
    return SyntheticSummary(users, num_items, written, writer.paths, meta)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recexp.data.synthetic OUT_DIR --interactions N [--seed S] [--compress]``."""
    parser = argparse.ArgumentParser(prog="python -m recexp.data.synthetic",
                                     description="Write a synthetic Amazon 2018 data set.")
    parser.add_argument("out_dir")
    parser.add_argument("--interactions", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, default=None, help="catalog size")
    parser.add_argument("--shard-lines", type=int, default=250_000)
    parser.add_argument("--missing-title-fraction", type=float, default=0.0)
    parser.add_argument("--compress", action="store_true", help="write .json.gz files")
    args = parser.parse_args(argv)
    summary = generate(args.out_dir, args.interactions, args.seed, num_items=args.items,
                       shard_lines=args.shard_lines, compress=args.compress,
                       missing_title_fraction=args.missing_title_fraction)
    print(json.dumps(dataclasses.asdict(summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
