"""The synthetic e-commerce world: one seeded, consistent catalogue that every synthetic subtask and the
`builtin:tiny` pretraining corpus are drawn from.

    world = build_world(seed=0)            # cached per seed; immutable
    docs = world_corpus(seed=0)            # plain-text pages a tiny LM is pretrained on

Two layers:
  * the ontology (categories with attribute schemas, departments, complementary categories, review
    aspects and their keyphrases, material facts, brands, a four-language lexicon) is fixed data below,
    the same for every seed, so what a model learns about it transfers across seeds;
  * the catalogue (products, prices, pack sizes, reviews, queries, sessions, also-bought links) is drawn
    from `random.Random` with the seed, and so is which part of it is held out.

Held-out split: every entity has a key string that can be read back from any prompt built on it (a
product's short title, a query's text, a review's text); `World.split_of(key)` hashes it with the seed,
and ~20% of keys are held out. Equal prompts therefore always fall in the same split.

The corpus states facts (category pages, lexicon lines, review vocabulary, brand and material facts,
product pages with reviews and what they say about which aspect, what each search names and finds,
sessions) and never uses the task prompts. Generic multiple-choice drills (`_drill_pages`) do use the
numbered-option layout, as the instruction data of a real LLM would: they teach answering by content,
not any subtask's question. Held-out reviews, queries, sessions, also-bought links and translations are left out of it.
Pure Python: no numpy, no global random state, no iteration over sets.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# The world's design revision, informational: builtin:tiny's cache key hashes the pretraining corpus
# itself (harness.model.tiny_fingerprint), so any corpus change rebuilds the model without a bump.
WORLD_VERSION = 5
HELDOUT_PERCENT = 20  # share of entity keys held out for evaluation

# ---------------------------------------------------------------------------------------------
# Ontology: fixed data

COLORS = ("red", "blue", "green", "black", "white", "gray", "pink", "yellow")
SIZES = ("small", "medium", "large")
AUDIENCES = ("men", "women", "kids")
SCENTS = ("vanilla", "mint", "lemon", "rose")

# Where an attribute sits in a title: "pre" before the noun, "for" as "for <value>" after it,
# "post" after a comma. Pre attributes are listed in title order.
PRE_ATTRIBUTES = ("color", "scent", "flavor", "material")
FOR_ATTRIBUTES = ("audience",)
POST_ATTRIBUTES = ("size", "capacity", "wattage", "length", "page count", "power source", "connection")
ATTRIBUTES = PRE_ATTRIBUTES + FOR_ATTRIBUTES + POST_ATTRIBUTES

# Every value an attribute takes anywhere (multiple-choice distractors come from here).
ATTRIBUTE_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "color": COLORS,
    "scent": SCENTS,
    "flavor": ("vanilla", "caramel", "plain", "mint", "lemon", "chicken", "beef", "fish"),
    "material": ("cotton", "wool", "linen", "leather", "canvas", "nylon", "ceramic", "glass",
                 "steel", "wood", "plastic"),
    "audience": AUDIENCES,
    "size": SIZES,
    "capacity": ("300 ml", "400 ml", "500 ml", "1000 ml", "1500 ml", "2000 ml"),
    "wattage": ("5 watt", "9 watt", "12 watt", "10 watt", "20 watt", "30 watt"),
    "length": ("1 m", "2 m", "3 m"),
    "page count": ("80 pages", "120 pages", "200 pages"),
    "power source": ("battery powered", "plug-in"),
    "connection": ("wireless", "wired"),
})

# unit: "item" (quantity = items in a pack), "g" or "ml" (quantity = grams or millilitres);
# unit_price: dollars per item, per 100 g or per 100 ml before brand and noise factors.
_CATEGORY_TABLE: tuple[dict, ...] = (
    dict(name="shirt", department="clothing", definition="a shirt is a top worn on the upper body",
         attrs={"color": COLORS, "material": ("cotton", "linen", "wool"), "audience": AUDIENCES,
                "size": SIZES},
         unit="item", item_word="shirts", quantities=(1, 2, 3), unit_price=9.0,
         complements=("jacket",), aspects=("fit", "comfort", "quality", "look")),
    dict(name="socks", department="clothing", definition="socks are soft covers worn on the feet",
         attrs={"color": COLORS, "material": ("cotton", "wool", "nylon"), "audience": AUDIENCES,
                "size": SIZES},
         unit="item", item_word="pairs", quantities=(2, 3, 4, 6, 8, 10, 12), unit_price=2.0,
         complements=("shoes",), aspects=("fit", "comfort", "quality", "durability")),
    dict(name="shoes", department="clothing", definition="shoes are sturdy covers that protect the feet",
         attrs={"color": COLORS, "material": ("leather", "canvas"), "audience": AUDIENCES, "size": SIZES},
         unit="item", item_word="pairs", quantities=(1, 2), unit_price=30.0,
         complements=("socks",), aspects=("fit", "comfort", "durability", "look")),
    dict(name="jacket", department="clothing", definition="a jacket is a warm outer layer with sleeves",
         attrs={"color": COLORS, "material": ("wool", "leather", "nylon"), "audience": AUDIENCES,
                "size": SIZES},
         unit="item", item_word="jackets", quantities=(1,), unit_price=40.0,
         complements=("shirt",), aspects=("fit", "quality", "look", "price")),
    dict(name="mug", department="kitchen", definition="a mug is a cup with a handle for hot drinks",
         attrs={"color": COLORS, "material": ("ceramic", "glass", "steel"),
                "capacity": ("300 ml", "400 ml", "500 ml")},
         unit="item", item_word="mugs", quantities=(1, 2, 4, 6), unit_price=5.0,
         complements=("coffee", "tea"), aspects=("quality", "size", "look", "durability")),
    dict(name="kettle", department="kitchen", definition="a kettle is a pot used to boil water",
         attrs={"color": COLORS, "material": ("steel", "glass", "plastic"),
                "capacity": ("1000 ml", "1500 ml", "2000 ml")},
         unit="item", item_word="kettles", quantities=(1,), unit_price=25.0,
         complements=("tea", "mug"), aspects=("quality", "durability", "price")),
    dict(name="bowl", department="kitchen", definition="a bowl is a round dish for food or water",
         attrs={"color": COLORS, "material": ("ceramic", "steel", "plastic"), "size": SIZES},
         unit="item", item_word="bowls", quantities=(1, 2, 4), unit_price=4.0,
         complements=("dog food",), aspects=("size", "durability", "look")),
    dict(name="coffee", department="grocery", definition="coffee is a drink made from roasted beans",
         attrs={"flavor": ("vanilla", "caramel", "plain")},
         unit="g", item_word="grams", quantities=(250, 500, 1000), unit_price=2.0,
         complements=("mug",), aspects=("taste", "smell", "price")),
    dict(name="tea", department="grocery", definition="tea is a drink made by soaking leaves in hot water",
         attrs={"flavor": ("mint", "lemon", "plain")},
         unit="item", item_word="bags", quantities=(20, 40, 80), unit_price=0.15,
         complements=("kettle", "mug"), aspects=("taste", "smell", "price")),
    dict(name="towel", department="home", definition="a towel is a cloth used to dry the body",
         attrs={"color": COLORS, "material": ("cotton", "linen"), "size": SIZES},
         unit="item", item_word="towels", quantities=(1, 2, 4), unit_price=8.0,
         complements=("soap", "shampoo"), aspects=("comfort", "size", "quality", "look")),
    dict(name="lamp", department="home", definition="a lamp is a stand that holds a light bulb",
         attrs={"color": COLORS, "material": ("glass", "steel", "wood"),
                "power source": ("battery powered", "plug-in")},
         unit="item", item_word="lamps", quantities=(1,), unit_price=20.0,
         complements=("bulb",), aspects=("brightness", "look", "quality")),
    dict(name="bulb", department="home", definition="a bulb is a glass globe that gives electric light",
         attrs={"color": ("white", "yellow"), "wattage": ("5 watt", "9 watt", "12 watt")},
         unit="item", item_word="bulbs", quantities=(1, 2, 4, 6), unit_price=3.0,
         complements=("lamp",), aspects=("brightness", "durability", "price")),
    dict(name="notebook", department="office", definition="a notebook is a book of blank pages for notes",
         attrs={"color": COLORS, "size": SIZES, "page count": ("80 pages", "120 pages", "200 pages")},
         unit="item", item_word="notebooks", quantities=(1, 2, 3, 5), unit_price=3.0,
         complements=("pen", "backpack"), aspects=("quality", "size", "price")),
    dict(name="pen", department="office", definition="a pen is a tool for writing with ink",
         attrs={"color": COLORS, "material": ("plastic", "steel")},
         unit="item", item_word="pens", quantities=(1, 2, 5, 10, 12), unit_price=1.0,
         complements=("notebook",), aspects=("quality", "price", "durability")),
    dict(name="backpack", department="office", definition="a backpack is a bag carried on the back",
         attrs={"color": COLORS, "material": ("nylon", "canvas", "leather"), "size": SIZES},
         unit="item", item_word="backpacks", quantities=(1,), unit_price=30.0,
         complements=("notebook",), aspects=("size", "durability", "look", "comfort")),
    dict(name="shampoo", department="beauty", definition="shampoo is a soap made for washing hair",
         attrs={"scent": SCENTS},
         unit="ml", item_word="ml", quantities=(250, 400, 750), unit_price=1.5,
         complements=("towel",), aspects=("smell", "price", "quality")),
    dict(name="soap", department="beauty", definition="soap is a bar used with water to wash skin",
         attrs={"scent": SCENTS},
         unit="item", item_word="bars", quantities=(1, 2, 4, 6), unit_price=2.0,
         complements=("towel",), aspects=("smell", "price", "size")),
    dict(name="leash", department="pets", definition="a leash is a strap used to walk a dog",
         attrs={"color": COLORS, "material": ("nylon", "leather"), "length": ("1 m", "2 m", "3 m")},
         unit="item", item_word="leashes", quantities=(1,), unit_price=12.0,
         complements=("dog food",), aspects=("durability", "quality", "price")),
    dict(name="dog food", department="pets", definition="dog food is a meal made for pet dogs",
         attrs={"flavor": ("chicken", "beef", "fish")},
         unit="g", item_word="grams", quantities=(1000, 2000, 5000), unit_price=0.5,
         complements=("bowl", "leash"), aspects=("taste", "price", "quality")),
    dict(name="charger", department="electronics", definition="a charger is a device that refills a battery",
         attrs={"color": COLORS, "wattage": ("10 watt", "20 watt", "30 watt")},
         unit="item", item_word="chargers", quantities=(1, 2), unit_price=15.0,
         complements=("cable", "headphones"), aspects=("speed", "durability", "price")),
    dict(name="cable", department="electronics", definition="a cable is a cord that carries power or data",
         attrs={"color": COLORS, "length": ("1 m", "2 m", "3 m")},
         unit="item", item_word="cables", quantities=(1, 2, 3), unit_price=6.0,
         complements=("charger",), aspects=("speed", "durability", "price")),
    dict(name="headphones", department="electronics",
         definition="headphones are small speakers worn over the ears",
         attrs={"color": COLORS, "connection": ("wireless", "wired")},
         unit="item", item_word="pairs", quantities=(1,), unit_price=35.0,
         complements=("charger",), aspects=("sound", "comfort", "price", "quality")),
)

DEPARTMENTS = ("clothing", "kitchen", "grocery", "home", "office", "beauty", "pets", "electronics")

# brand -> departments it sells in (3 brands per department)
BRANDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Nordo": ("clothing",), "Kelva": ("clothing",), "Vasta": ("clothing", "office"),
    "Brio": ("kitchen", "home"), "Pella": ("kitchen",), "Ferro": ("kitchen", "electronics"),
    "Tamo": ("grocery", "pets"), "Mira": ("grocery", "beauty"), "Sola": ("beauty", "grocery"),
    "Lumo": ("home",), "Riva": ("home", "beauty"), "Quill": ("office",),
    "Daxa": ("office", "pets"), "Holt": ("pets",), "Zenta": ("electronics",), "Orix": ("electronics",),
})

# aspect -> (positive keyphrases, negative keyphrases); reviews are built from these
ASPECTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType({
    "fit": (("fits perfectly", "true to size", "great fit"), ("runs small", "too tight", "too loose")),
    "comfort": (("very comfortable", "soft and cozy", "comfy all day"),
                ("not comfortable", "feels scratchy", "hurts after an hour")),
    "quality": (("well made", "high quality", "solid build"),
                ("fell apart", "cheap material", "poorly made")),
    "look": (("looks great", "lovely color", "stylish design"), ("color faded", "looks cheap", "ugly design")),
    "price": (("great value", "worth the money", "good price"), ("too pricey", "overpriced", "not worth it")),
    "taste": (("tastes great", "rich flavor", "smooth taste"), ("tastes bland", "too bitter", "stale taste")),
    "smell": (("smells lovely", "fresh scent", "nice smell"), ("weak scent", "smells odd", "too strong")),
    "size": (("perfect size", "roomy", "just the right size"),
             ("too small", "too bulky", "smaller than expected")),
    "durability": (("holds up well", "very sturdy", "lasts long"),
                   ("broke quickly", "flimsy", "cracked fast")),
    "sound": (("clear sound", "deep bass", "great audio"), ("muffled sound", "crackles", "weak bass")),
    "speed": (("charges fast", "quick charging", "fast transfer"),
              ("charges slowly", "very slow", "slow to charge")),
    "brightness": (("bright light", "warm glow", "very bright"), ("too dim", "flickers", "harsh light")),
})

# rating -> review openers; 5 and 1 are strong, 4 and 2 mild
REVIEW_OPENERS: Mapping[int, tuple[str, ...]] = MappingProxyType({
    5: ("Love it!", "Absolutely perfect.", "Amazing buy!", "Best purchase ever."),
    4: ("Pretty good.", "Good overall.", "Nice, with a small flaw.", "Mostly happy."),
    2: ("Not great.", "Somewhat disappointed.", "Below average.", "Meh."),
    1: ("Terrible.", "Total waste of money.", "Awful, returning it.", "Very disappointed."),
})
RATINGS = (1, 2, 4, 5)

# Purchase obstacles: (need, attribute, values that fail the need, categories it is asked about)
NEEDS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("safe in a microwave", "material", ("steel",), ("mug", "bowl")),
    ("machine washable", "material", ("wool", "leather"), ("shirt", "socks", "jacket")),
    ("waterproof", "material", ("canvas",), ("shoes", "backpack")),
    ("hard to break", "material", ("glass", "ceramic"), ("mug", "bowl", "kettle", "lamp")),
    ("usable without a power outlet", "power source", ("plug-in",), ("lamp",)),
    ("usable without wires", "connection", ("wired",), ("headphones",)),
)
NEED_FACTS = (
    "Steel is not safe in a microwave; ceramic and glass are safe in a microwave.",
    "Wool and leather are not machine washable; cotton, linen and nylon are machine washable.",
    "Canvas is not waterproof; nylon and leather are waterproof.",
    "Glass and ceramic are not hard to break; steel, wood and plastic are hard to break.",
    "A plug-in lamp is not usable without a power outlet; a battery powered lamp is.",
    "Wired headphones are not usable without wires; wireless headphones are.",
)

LANGUAGES: Mapping[str, str] = MappingProxyType({"es": "Spanish", "de": "German", "fr": "French"})

# English word -> (Spanish, German, French). Single forms (no gender agreement): a small, regular
# lexicon a tiny model can learn from the corpus.
LEXICON: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    # colors
    "red": ("rojo", "rot", "rouge"), "blue": ("azul", "blau", "bleu"), "green": ("verde", "grün", "vert"),
    "black": ("negro", "schwarz", "noir"), "white": ("blanco", "weiß", "blanc"),
    "gray": ("gris", "grau", "gris"), "pink": ("rosa", "rosa", "rose"),
    "yellow": ("amarillo", "gelb", "jaune"),
    # materials
    "cotton": ("algodón", "Baumwolle", "coton"), "wool": ("lana", "Wolle", "laine"),
    "linen": ("lino", "Leinen", "lin"), "leather": ("cuero", "Leder", "cuir"),
    "canvas": ("lona", "Segeltuch", "toile"), "nylon": ("nailon", "Nylon", "nylon"),
    "ceramic": ("cerámica", "Keramik", "céramique"), "glass": ("vidrio", "Glas", "verre"),
    "steel": ("acero", "Stahl", "acier"), "wood": ("madera", "Holz", "bois"),
    "plastic": ("plástico", "Kunststoff", "plastique"),
    # scents and flavors
    "vanilla": ("vainilla", "Vanille", "vanille"), "mint": ("menta", "Minze", "menthe"),
    "lemon": ("limón", "Zitrone", "citron"), "rose": ("rosa", "Rose", "rose"),
    "caramel": ("caramelo", "Karamell", "caramel"), "plain": ("natural", "natur", "nature"),
    "chicken": ("pollo", "Huhn", "poulet"), "beef": ("ternera", "Rind", "boeuf"),
    "fish": ("pescado", "Fisch", "poisson"),
    # audiences and sizes
    "men": ("hombre", "Herren", "homme"), "women": ("mujer", "Damen", "femme"),
    "kids": ("niños", "Kinder", "enfants"),
    "small": ("pequeño", "klein", "petit"), "medium": ("mediano", "mittel", "moyen"),
    "large": ("grande", "groß", "grand"),
    # category nouns
    "shirt": ("camisa", "Hemd", "chemise"), "socks": ("calcetines", "Socken", "chaussettes"),
    "shoes": ("zapatos", "Schuhe", "chaussures"), "jacket": ("chaqueta", "Jacke", "veste"),
    "mug": ("taza", "Becher", "tasse"), "kettle": ("hervidor", "Wasserkocher", "bouilloire"),
    "bowl": ("cuenco", "Schüssel", "bol"), "coffee": ("café", "Kaffee", "café"),
    "tea": ("té", "Tee", "thé"), "towel": ("toalla", "Handtuch", "serviette"),
    "lamp": ("lámpara", "Lampe", "lampe"), "bulb": ("bombilla", "Glühbirne", "ampoule"),
    "notebook": ("cuaderno", "Notizbuch", "cahier"), "pen": ("bolígrafo", "Kugelschreiber", "stylo"),
    "backpack": ("mochila", "Rucksack", "sac à dos"), "shampoo": ("champú", "Shampoo", "shampooing"),
    "soap": ("jabón", "Seife", "savon"), "leash": ("correa", "Leine", "laisse"),
    "dog food": ("comida para perros", "Hundefutter", "croquettes"),
    "charger": ("cargador", "Ladegerät", "chargeur"), "cable": ("cable", "Kabel", "câble"),
    "headphones": ("auriculares", "Kopfhörer", "casque"),
    # departments
    "clothing": ("ropa", "Kleidung", "vêtements"), "kitchen": ("cocina", "Küche", "cuisine"),
    "grocery": ("alimentos", "Lebensmittel", "épicerie"), "home": ("hogar", "Haushalt", "maison"),
    "office": ("oficina", "Büro", "bureau"), "beauty": ("belleza", "Schönheit", "beauté"),
    "pets": ("mascotas", "Haustiere", "animaux"),
    "electronics": ("electrónica", "Elektronik", "électronique"),
})
_LANG_INDEX = {"es": 0, "de": 1, "fr": 2}
# How a translated short title joins a material and an audience, per language.
_MATERIAL_WORD = {"es": "de", "de": "aus", "fr": "en"}
_AUDIENCE_WORD = {"es": "para", "de": "für", "fr": "pour"}

PRODUCTS_PER_CATEGORY = 60  # fewer where a category has fewer distinct titles


def translate_word(word: str, lang: str) -> str:
    """One lexicon entry in `lang` ('es', 'de', 'fr')."""
    return LEXICON[word][_LANG_INDEX[lang]]


def in_text(word: str, text: str) -> bool:
    """Whether `word` (one or more whole words) occurs in `text`, ignoring case and commas."""
    return f" {word.lower()} " in f" {text.lower().replace(',', ' ')} "


def stable_hash(text: str) -> int:
    """A process-independent hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# ---------------------------------------------------------------------------------------------
# Entities


@dataclass(frozen=True)
class Category:
    name: str  # the noun used in titles and queries
    department: str
    definition: str  # one sentence, lower case: the answer to "explain this product type"
    attrs: Mapping[str, tuple[str, ...]]  # attribute -> values this category takes
    unit: str  # "item", "g" or "ml"
    item_word: str  # what a quantity counts: "pairs", "bags", "grams"
    quantities: tuple[int, ...]  # pack sizes (items) or grams / millilitres
    unit_price: float  # dollars per item, per 100 g or per 100 ml
    complements: tuple[str, ...]  # categories often bought with this one
    aspects: tuple[str, ...]  # what its reviews talk about


@dataclass(frozen=True)
class Product:
    index: int
    brand: str
    category: str
    attrs: tuple[tuple[str, str], ...]  # (attribute, value) in ATTRIBUTES order
    quantity: int  # items per pack, or grams / millilitres
    price: float  # dollars
    short_title: str  # brand + pre attributes + noun (+ audience): the split key
    title: str  # short title + post attributes + quantity
    also_bought: tuple[int, ...] = ()  # product indices from complementary categories

    def attr(self, name: str) -> str | None:
        for attr, value in self.attrs:
            if attr == name:
                return value
        return None


@dataclass(frozen=True)
class Review:
    product: int
    rating: int  # 1, 2, 4 or 5 stars
    mentions: tuple[tuple[str, str, bool], ...]  # (aspect, keyphrase, positive) in text order
    text: str
    category: str

    @property
    def key(self) -> str:
        return f"{self.category}|{self.text}"


@dataclass(frozen=True)
class Query:
    text: str  # lower case
    category: str
    constraints: tuple[tuple[str, str], ...]  # (attribute or "brand", value), as the query states them
    lang: str = "en"

    def entities(self) -> dict[str, str]:
        """NER entity type -> the phrase in the query."""
        noun = self.category if self.lang == "en" else translate_word(self.category, self.lang)
        out = {"product type": noun}
        for attr, value in self.constraints:
            out[attr] = value
        return out


@dataclass(frozen=True)
class Session:
    queries: tuple[str, ...]  # what the shopper searched, in order
    category: str
    next_queries: tuple[str, ...]  # what they searched next: a refinement and complementary searches

    @property
    def key(self) -> str:
        return " | ".join(self.queries)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one cached world per seed
class World:
    seed: int
    categories: Mapping[str, Category]
    products: tuple[Product, ...]
    by_category: Mapping[str, tuple[int, ...]]  # category -> product indices
    reviews: tuple[Review, ...]
    queries: tuple[Query, ...]  # English search queries, distinct texts
    foreign_queries: tuple[Query, ...]  # Spanish, German and French search queries
    sessions: tuple[Session, ...]

    def split_of(self, key: str) -> str:
        """'heldout' for ~HELDOUT_PERCENT% of keys, else 'train'; stable for (seed, key)."""
        return "heldout" if stable_hash(f"split|{self.seed}|{key}") % 100 < HELDOUT_PERCENT else "train"

    def product_split(self, product: Product) -> str:
        return self.split_of(product.short_title)

    def products_in(self, category: str, split: str | None = None) -> list[Product]:
        found = [self.products[i] for i in self.by_category[category]]
        return found if split is None else [p for p in found if self.product_split(p) == split]

    def reviews_in(self, split: str) -> tuple[Review, ...]:
        """The split's reviews, in world order (computed once per world and split)."""
        return _reviews_in(self, split)


@functools.lru_cache(maxsize=16)  # worlds hash by identity; one cached world per seed
def _reviews_in(world: World, split: str) -> tuple[Review, ...]:
    return tuple(r for r in world.reviews if world.split_of(r.key) == split)


# ---------------------------------------------------------------------------------------------
# Titles and queries


def short_title(brand: str, category: str, attrs: Mapping[str, str]) -> str:
    pre = [attrs[a] for a in PRE_ATTRIBUTES if a in attrs]
    text = " ".join([brand, *pre, category])
    return text + (f" for {attrs['audience']}" if "audience" in attrs else "")


def full_title(short: str, category: Category, attrs: Mapping[str, str], quantity: int) -> str:
    parts = [attrs[a] for a in POST_ATTRIBUTES if a in attrs]
    if category.unit == "item" and quantity > 1:
        parts.append(f"pack of {quantity}")
    elif category.unit != "item":
        parts.append(f"{quantity} {category.unit}")
    return ", ".join([short, *parts])


def translate_title(product: Product, lang: str) -> str:
    """The short title in `lang`: nouns first in Spanish and French, adjectives first in German."""
    tr = functools.partial(translate_word, lang=lang)
    adjectives = [tr(v) for a, v in product.attrs if a in ("color", "scent", "flavor")]
    noun = tr(product.category)
    words = [product.brand] + ([*adjectives, noun] if lang == "de" else [noun, *adjectives])
    material = product.attr("material")
    if material:
        words += [_MATERIAL_WORD[lang], tr(material)]
    audience = product.attr("audience")
    if audience:
        words += [_AUDIENCE_WORD[lang], tr(audience)]
    return " ".join(words)


def render_query(category: str, constraints: Mapping[str, str], style: int) -> str:
    """An English search query; three word orders so one intent has several wordings."""
    pre = [constraints[a] for a in PRE_ATTRIBUTES if a in constraints]
    brand = constraints.get("brand", "")
    audience = constraints.get("audience", "")
    if style == 0:
        words = [brand, *pre, category] + (["for", audience] if audience else [])
    elif style == 1:
        words = [category, *pre, brand, audience]
    else:
        words = [*pre, category] + (["by", brand] if brand else []) + ([audience] if audience else [])
    return " ".join(w for w in words if w).lower()


def render_foreign_query(category: str, constraints: Mapping[str, str], lang: str) -> str:
    tr = functools.partial(translate_word, lang=lang)
    pre = [tr(constraints[a]) for a in PRE_ATTRIBUTES if a in constraints]
    noun = tr(category)
    words = [*pre, noun] if lang == "de" else [noun, *pre]
    return " ".join(words + [constraints.get("brand", "")]).strip().lower()


# ---------------------------------------------------------------------------------------------
# Building the world


def _categories() -> Mapping[str, Category]:
    cats = {}
    for row in _CATEGORY_TABLE:
        row = dict(row, attrs=MappingProxyType(dict(row["attrs"])))
        cats[row["name"]] = Category(**row)
    return MappingProxyType(cats)


CATEGORIES: Mapping[str, Category] = _categories()  # name -> Category, the same in every world


def _brands_for(department: str) -> list[str]:
    return [b for b, deps in BRANDS.items() if department in deps]


def _make_products(cats: Mapping[str, Category], rng: random.Random) -> list[Product]:
    brand_factor = {b: rng.choice((0.8, 0.9, 1.0, 1.1, 1.25)) for b in BRANDS}
    products: list[Product] = []
    for cat in cats.values():
        titles: set[str] = set()
        brands = _brands_for(cat.department)
        for _ in range(PRODUCTS_PER_CATEGORY * 4):
            if len(titles) >= PRODUCTS_PER_CATEGORY:
                break
            attrs = {a: rng.choice(vals) for a, vals in cat.attrs.items()}
            attrs = {a: attrs[a] for a in ATTRIBUTES if a in attrs}
            brand, quantity = rng.choice(brands), rng.choice(cat.quantities)
            short = short_title(brand, cat.name, attrs)
            title = full_title(short, cat, attrs, quantity)
            if title in titles:
                continue
            titles.add(title)
            per = quantity if cat.unit == "item" else quantity / 100
            price = round(cat.unit_price * per * brand_factor[brand] * rng.uniform(0.9, 1.1), 2)
            products.append(Product(len(products), brand, cat.name, tuple(attrs.items()), quantity,
                                    max(price, 0.5), short, title))
    return products


def _link_also_bought(products: list[Product], cats: Mapping[str, Category],
                      by_cat: Mapping[str, tuple[int, ...]], rng: random.Random) -> list[Product]:
    """Three co-purchased products per product, from its complementary categories, distinct short titles."""
    linked = []
    for p in products:
        pool = [i for c in cats[p.category].complements for i in by_cat[c]]
        rng.shuffle(pool)
        picks, seen = [], set()
        for i in pool:
            if products[i].short_title not in seen:
                seen.add(products[i].short_title)
                picks.append(i)
            if len(picks) == 3:
                break
        linked.append(Product(**{**p.__dict__, "also_bought": tuple(picks)}))
    return linked


def _make_review(product: Product, cat: Category, rng: random.Random) -> Review:
    rating = rng.choice(RATINGS)
    first = rating >= 4  # the first remark carries the overall sentiment
    second = {5: True, 1: False}.get(rating, rng.random() < 0.5)
    aspects = rng.sample(cat.aspects, 2)
    mentions = tuple((a, rng.choice(ASPECTS[a][0 if pos else 1]), pos)
                     for a, pos in zip(aspects, (first, second)))
    joint = "and" if first == second else "but"
    text = f"{rng.choice(REVIEW_OPENERS[rating])} {mentions[0][1]}, {joint} {mentions[1][1]}."
    return Review(product.index, rating, mentions, text, cat.name)


def _query_constraints(product: Product, rng: random.Random, k: int) -> dict[str, str]:
    options = [("brand", product.brand)] + [(a, v) for a, v in product.attrs
                                            if a in PRE_ATTRIBUTES or a in FOR_ATTRIBUTES]
    return dict(rng.sample(options, min(k, len(options))))  # in sampled order: sessions refine in it


def _make_queries(products: list[Product], rng: random.Random) -> list[Query]:
    queries: dict[str, Query] = {}
    for p in products:
        for _ in range(2):
            cons = _query_constraints(p, rng, rng.choice((1, 1, 2, 3)))
            text = render_query(p.category, cons, rng.randrange(3))
            queries.setdefault(text, Query(text, p.category, tuple(cons.items())))
    return list(queries.values())


def _make_foreign_queries(products: list[Product], rng: random.Random) -> list[Query]:
    queries: dict[str, Query] = {}
    for p in products + products:  # two tries per product
        lang = rng.choice(tuple(LANGUAGES))
        cons = _query_constraints(p, rng, rng.choice((1, 2)))
        cons = {a: v for a, v in cons.items() if a in ("brand", "color", "material")} or {"brand": p.brand}
        text = render_foreign_query(p.category, cons, lang)
        entities = tuple((a, v.lower() if a == "brand" else translate_word(v, lang).lower())
                         for a, v in cons.items())
        queries.setdefault(text, Query(text, p.category, entities, lang))
    return list(queries.values())


def _make_session(p: Product, world_cats: Mapping[str, Category], by_cat, products, rng) -> Session | None:
    """bare noun -> one constraint -> two constraints; next: a third constraint and two searches in
    complementary categories."""
    cons = list(_query_constraints(p, rng, 3).items())
    if len(cons) < 3:
        return None
    style = rng.randrange(3)
    steps = [render_query(p.category, dict(cons[:k]), style) for k in range(3)]
    nxt = [render_query(p.category, dict(cons), style)]
    for _ in range(2):
        comp = products[rng.choice(by_cat[rng.choice(world_cats[p.category].complements)])]
        nxt.append(render_query(comp.category, _query_constraints(comp, rng, rng.choice((0, 1))),
                                rng.randrange(3)))
    if len(set(steps + nxt)) < 6:
        return None
    return Session(tuple(steps), p.category, tuple(nxt))


@functools.lru_cache(maxsize=8)
def build_world(seed: int = 0) -> World:
    """The catalogue for `seed` (cached; every part is immutable, so callers may share it)."""
    rng = random.Random(f"world|{seed}")
    cats = CATEGORIES
    products = _make_products(cats, rng)
    by_cat = MappingProxyType({c: tuple(p.index for p in products if p.category == c) for c in cats})
    products = _link_also_bought(products, cats, by_cat, rng)
    reviews = [_make_review(p, cats[p.category], rng) for p in products for _ in range(3)]
    reviews = list({r.key: r for r in reviews}.values())
    sessions = {}
    for p in products + products:  # two tries per product
        s = _make_session(p, cats, by_cat, products, rng)
        if s is not None:
            sessions.setdefault(s.key, s)
    return World(seed, cats, tuple(products), by_cat, tuple(reviews), tuple(_make_queries(products, rng)),
                 tuple(_make_foreign_queries(products, rng)), tuple(sessions.values()))


# ---------------------------------------------------------------------------------------------
# Pretraining corpus: facts about the world, never task prompts or answer layouts


def _money(x: float) -> str:
    return f"${x:.2f}"


def _unit_price_text(p: Product, cat: Category) -> str:
    if cat.unit == "item":
        return f"{_money(p.price / p.quantity)} per item"
    return f"{_money(p.price * 100 / p.quantity)} per 100 {cat.unit}"


def _category_page(cat: Category) -> str:
    comps = " and ".join(cat.complements)
    lines = [
        f"Category: {cat.name}. Department: {cat.department}.",
        f"{cat.definition[0].upper()}{cat.definition[1:]}.",
        f"A {cat.name} product has these attributes: {', '.join(cat.attrs)}.",
    ]
    lines += [f"The {a} of a {cat.name} can be {', '.join(v)}." for a, v in cat.attrs.items()
              if a in ("material", "scent", "flavor", "power source", "connection")]
    lines += [f"People who buy {cat.name} often also buy {comps}.",
              f"Shoppers who search for {cat.name} often search for {comps} next.",
              f"Reviews of {cat.name} talk about {', '.join(cat.aspects)}."]
    return "\n".join(lines)


def _lexicon_pages() -> list[str]:
    groups = {
        "Colors": COLORS, "Materials": ATTRIBUTE_VALUES["material"],
        "Scents and flavors": ("vanilla", "mint", "lemon", "rose", "caramel", "plain", "chicken", "beef",
                               "fish"),
        "Sizes and audiences": SIZES + AUDIENCES,
        "Product types": tuple(c["name"] for c in _CATEGORY_TABLE), "Departments": DEPARTMENTS,
    }
    pages = []
    for title, words in groups.items():
        lines = [f"{title} in Spanish (es), German (de) and French (fr):"]
        lines += [f"{w} = {translate_word(w, 'es')} (es) = {translate_word(w, 'de')} (de) = "
                  f"{translate_word(w, 'fr')} (fr)" for w in words]
        pages.append("\n".join(lines))
    # The other direction too, foreign word first, as the multilingual subtasks read it: a model this
    # small learns a fact in the order it reads it (the reversal curse), and the table runs English first.
    meanings = [f"The {name} word {translate_word(w, lang)} means {w}."
                for w in LEXICON for lang, name in LANGUAGES.items()]
    random.Random("lexicon").shuffle(meanings)
    pages += ["\n".join(meanings[i:i + 12]) for i in range(0, len(meanings), 12)]
    pages.append("Word order in product titles: Spanish and French put the color after the product type, "
                 "German puts it before. A material follows de (es), aus (de) or en (fr). "
                 "An audience follows para (es), für (de) or pour (fr).")
    return pages


def _aspect_pages() -> list[str]:
    return [f"Good remarks about {a}: {', '.join(good)}.\nBad remarks about {a}: {', '.join(bad)}."
            for a, (good, bad) in ASPECTS.items()]


def _reference_pages(cats: Mapping[str, Category]) -> list[str]:
    brands = [f"{b} sells {' and '.join(deps)} products: "
              + ", ".join(c.name for c in cats.values() if c.department in deps) + "."
              for b, deps in BRANDS.items()]
    times = [f"{a} x {b} = {a * b}" for a in range(1, 13) for b in range(1, 7)]
    attrs = sorted({a for c in cats.values() for a in c.attrs})
    # Attribute first, as attribute_category asks; the category pages list them the other way round.
    having = [f"Products that can have a {a}: " + ", ".join(c.name for c in cats.values() if a in c.attrs)
              + "." for a in attrs]
    return ["\n".join(brands), "\n".join(having), "\n".join(NEED_FACTS),
            "Counting packs:\n" + "\n".join(times),
            "The best value is the offer with the lowest price per item, per 100 g or per 100 ml."]


def _product_page(world: World, p: Product, reviews: list[Review], rng: random.Random) -> str:
    cat = world.categories[p.category]
    lines = [p.title, f"Brand: {p.brand}. Category: {p.category} ({cat.department}); {cat.definition}."]
    lines += [f"{a.capitalize()}: {v}." for a, v in p.attrs]
    if cat.unit == "item" and p.quantity == 1:
        lines.append(f"Price: {_money(p.price)}.")
    else:
        lines.append(f"Price: {_money(p.price)} for {p.quantity} {cat.item_word} ({_unit_price_text(p, cat)}).")
    lines.append(f"Goes well with {' and '.join(cat.complements)}.")
    lines += [f"{'Not ' if p.attr(attr) in bad else ''}{need}.".capitalize()
              for need, attr, bad, cats in NEEDS if p.category in cats]
    # The review before its stars, as review_rating reads them (written the other way round, the stars
    # stayed at chance after fine-tuning: 0.25 vs 0.45 with this order; issue 15's note has the runs).
    lines += [f"A review says: {r.text} The reviewer gave {r.rating} star{'s' if r.rating > 1 else ''}. "
              "It says " + " and ".join(f"{phrase} about {aspect}" for aspect, phrase, _ in r.mentions) + "."
              for r in reviews[:2]]
    if world.product_split(p) == "train":  # held-out links and translations stay unseen
        names = "; ".join(world.products[i].short_title for i in p.also_bought)
        lines.append(f"Customers who bought this also bought {names}.")
        lang = rng.choice(tuple(LANGUAGES))
        foreign = translate_title(p, lang)
        lines.append(f"In {LANGUAGES[lang]} it is listed as {foreign}.")
        lines.append(f"The {LANGUAGES[lang]} title {foreign} names {p.short_title}.")
    return "\n".join(lines)


def _named(q: Query) -> str:
    """'the color red and the product type socks': what a query states, in its own words."""
    parts = [f"the {kind} {value.lower()}" for kind, value in q.entities().items()]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _search_pages(world: World, rng: random.Random) -> list[str]:
    facts = []
    for q in world.queries:
        if world.split_of(q.text) == "train":
            hits = [p for p in world.products_in(q.category)
                    if all((p.brand if a == "brand" else p.attr(a)) == v for a, v in q.constraints)]
            facts.append(f"The search '{q.text}' finds {rng.choice(hits).short_title}. "
                         f"It names {_named(q)}.")
    for s in world.sessions:
        if world.split_of(s.key) == "train":
            facts.append(f"A shopper searched {', then '.join(s.queries)}, and next searched "
                         f"{', '.join(s.next_queries)}.")
    for q in world.foreign_queries:
        if world.split_of(q.text) == "train":
            facts.append(f"The {LANGUAGES[q.lang]} search '{q.text}' looks for {q.category}. "
                         f"It names {_named(q)}.")
    rng.shuffle(facts)
    return ["\n".join(facts[i:i + 8]) for i in range(0, len(facts), 8)]


# ---------------------------------------------------------------------------------------------
# Drills: generic exercises over the world's vocabulary. An instruction-tuned LLM arrives knowing how
# to answer a numbered-option question and how to copy a span; a tiny model does not, and LoRA on a few
# hundred steps cannot teach it. The drills teach the layout and the habit of choosing by content
# (which word is in a title, which word is a color, a translation, a department, the larger number),
# answered with the option's text as `mc_answer: option_text` trains, and copying a marked span (which
# the extraction subtasks build on); never a subtask's question: those stay for fine-tuning to teach.
# Digit answers taught nothing here: a model of this size cannot learn which number points at which
# option.

DRILLS_PER_WORLD = 6000
_DRILL_KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "color": COLORS, "material": ATTRIBUTE_VALUES["material"], "department": DEPARTMENTS,
    "product type": tuple(c["name"] for c in _CATEGORY_TABLE), "brand": tuple(BRANDS), "size": SIZES,
})
_DRILL_WORDS = tuple(w for words in _DRILL_KINDS.values() for w in words)


def _drill(question: str, correct: str, distractors: list[str], rng: random.Random) -> str:
    options = [correct] + distractors
    rng.shuffle(options)
    lines = [f"Drill: {question}"] + [f"{i}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + f"\nAnswer: {correct}"


def _drill_mention(world: World, rng: random.Random) -> str:
    p = rng.choice(world.products)
    inside = [p.brand, p.category] + [v for _, v in p.attrs]
    word = rng.choice(inside)
    pool = [w for w in _DRILL_WORDS if w not in inside and w not in p.title]
    return _drill(f"which of these words is in '{p.title}'?", word, rng.sample(pool, 3), rng)


def _drill_mention_kind(world: World, rng: random.Random) -> str:
    """Which value of one attribute a title names, against values of that same attribute, as
    attribute_infer's options are (with only `_drill_mention`, whose distractors are any kind of word,
    attribute_infer averaged 0.475 in the smoke sweep; with this drill too, 0.515)."""
    p = rng.choice(world.products)
    attr, value = rng.choice(p.attrs)
    pool = [v for v in ATTRIBUTE_VALUES[attr] if v != value and not in_text(v, p.title)]
    if len(pool) < 3:
        return _drill_mention(world, rng)
    return _drill(f"which of these words is in '{p.title}'?", value, rng.sample(pool, 3), rng)


def _drill_kind(world: World, rng: random.Random) -> str:
    kind = rng.choice(list(_DRILL_KINDS))
    pool = [w for w in _DRILL_WORDS if w not in _DRILL_KINDS[kind]]
    return _drill(f"which of these is a {kind}?", rng.choice(_DRILL_KINDS[kind]), rng.sample(pool, 3), rng)


def _drill_translation(world: World, rng: random.Random) -> str:
    lang = rng.choice(tuple(LANGUAGES))
    words = rng.sample(list(LEXICON), 4)
    foreign = [translate_word(w, lang) for w in words]
    if len(set(foreign)) < 4:  # a few words share a spelling across the lexicon
        return _drill_kind(world, rng)
    return _drill(f"which of these is the {LANGUAGES[lang]} word for '{words[0]}'?", foreign[0], foreign[1:], rng)


def _drill_department(world: World, rng: random.Random) -> str:
    cat = rng.choice(list(world.categories.values()))
    others = [c.name for c in world.categories.values() if c.department != cat.department]
    return _drill(f"which of these is sold in the {cat.department} department?", cat.name,
                  rng.sample(others, 3), rng)


def _drill_number(world: World, rng: random.Random) -> str:
    numbers = rng.sample(range(1, 60), 4)
    largest = rng.random() < 0.5
    best = max(numbers) if largest else min(numbers)
    return _drill(f"which of these numbers is the {'largest' if largest else 'smallest'}?", str(best),
                  [str(n) for n in numbers if n != best], rng)


def _drill_copy(world: World, rng: random.Random) -> str:
    """Copy a bracketed span of a review or a title: the generic copying habit that extraction
    subtasks build on (which span to copy stays theirs to teach)."""
    if rng.random() < 0.5:  # train-split reviews only: a held-out review's spans stay unseen
        r = rng.choice(world.reviews_in("train"))
        span = rng.choice(r.mentions)[1]
        text = r.text.replace(span, f"[{span}]", 1)
    else:
        words = rng.choice(world.products).title.replace(",", "").split()
        k = rng.randrange(len(words))
        n = rng.randint(1, min(2, len(words) - k))
        span = " ".join(words[k:k + n])
        text = " ".join(words[:k] + [f"[{span}]"] + words[k + n:])
    return f"Drill: copy the words in brackets.\nText: {text}\nAnswer: {span}"


_DRILLS = (_drill_mention, _drill_mention_kind, _drill_kind, _drill_translation, _drill_department, _drill_number,
           _drill_copy)


def _drill_pages(world: World, rng: random.Random) -> list[str]:
    return [rng.choice(_DRILLS)(world, rng) for _ in range(DRILLS_PER_WORLD)]


@functools.lru_cache(maxsize=4)
def _corpus(seed: int) -> tuple[str, ...]:
    world = build_world(seed)
    rng = random.Random(f"corpus|{seed}")
    fixed = ([_category_page(c) for c in world.categories.values()] + _lexicon_pages()
             + _aspect_pages() + _reference_pages(world.categories))
    reviews: dict[int, list[Review]] = {}
    for r in world.reviews:
        if world.split_of(r.key) == "train":
            reviews.setdefault(r.product, []).append(r)
    pages = [_product_page(world, p, reviews.get(p.index, []), rng) for p in world.products]
    pages += _search_pages(world, rng)
    pages += _drill_pages(world, random.Random(f"drills|{seed}"))
    rng.shuffle(pages)
    return tuple(fixed + pages)


def world_corpus(seed: int = 0, n_docs: int | None = None) -> list[str]:
    """Plain-text documents about the world: ontology pages first (categories, lexicon, review
    vocabulary, brands, facts), then product pages and search facts in a seeded order; the first
    `n_docs` of them when given."""
    docs = _corpus(seed)
    return list(docs if n_docs is None else docs[:n_docs])
