"""The two styles of the mini corpus: word lists, sentence templates and entity attributes.

Pure data for the engine in :mod:`quail_repro.data.mini_corpus`: a :class:`Style` says
what an entity is called and which facts it has (:class:`Attribute`: how a value is drawn,
stated and asked about), and supplies intros, fillers and the word lists that fill their
detail slots. Editing anything here changes every generated corpus (and its hash).
Templates must keep articles within the engine's 120-180 word range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from quail_repro.data.names import Names

# ------------------------------------------------------------------ what a style is made of


@dataclass(frozen=True)
class Attribute:
    """One fact about an entity: how its value is drawn, stated and asked about.

    Templates are ``str.format`` strings: ``{n}`` entity name, ``{v}`` this value, any
    other attribute by key, and random-detail slots (see ``mini_corpus._detail``). The
    answer is the value itself, which every statement contains verbatim, so answers are
    checkable against the article.
    """

    key: str
    make: Callable[[random.Random, Names, dict], str]
    statements: tuple[str, ...]
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Style:
    name: str  # "news" / "books"
    dataset: str  # "mini_news" / "mini_books"
    entity_kind: str  # for the README
    make_name: Callable[[random.Random, Names], tuple[str, str]]  # -> (name, full name)
    attributes: tuple[Attribute, ...]
    intros: tuple[str, ...]  # first sentence; uses {full}, so VerbMem prompts name the entity
    fillers: tuple[str, ...]  # random detail, no facts
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # word lists for detail slots


def _pick(words):
    return lambda rng, names, attrs: rng.choice(words)


def _combo(first, second, joiner=" "):
    return lambda rng, names, attrs: rng.choice(first) + joiner + rng.choice(second)


def person(rng: random.Random, names: Names, first_names) -> str:
    return f"{rng.choice(first_names)} {names.word((2, 2))}"


# ------------------------------------------------------------------ word lists

_FIRST = ("Mara", "Jonas", "Elin", "Tobias", "Ines", "Petra", "Oskar", "Lena", "Ruth", "Anton", "Vera",
          "Hugo", "Nadia", "Felix", "Greta", "Ivo", "Selma", "Emil", "Dora", "Lukas", "Alma", "Bruno",
          "Cora", "Dmitri", "Edda", "Farah", "Goran", "Hanna", "Ilse", "Jasper", "Kira", "Leo", "Mila",
          "Nils", "Olga", "Pavel", "Rosa", "Soren", "Tilda", "Viktor", "Agnes", "Bram", "Clara", "Ewan")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_SEASONS = ("spring", "summer", "autumn", "winter")
_COLORS = ("red", "blue", "green", "yellow", "white", "black", "grey", "purple", "brown", "golden")
_ADJ = ("quiet", "busy", "windy", "cold", "bright", "muddy", "crowded", "sleepy", "rainy", "dusty",
        "cheerful", "gloomy", "stormy", "foggy", "sunny", "noisy", "narrow", "ancient", "famous", "strange")
_JOBS = ("baker", "carpenter", "schoolteacher", "ferryman", "blacksmith", "weaver", "miller", "tailor",
         "potter", "shepherd", "locksmith", "clockmaker", "bookbinder", "fisherman", "mason", "glassblower",
         "herbalist", "cooper", "tanner", "surveyor", "lamplighter", "cartographer", "beekeeper", "saddler")

# news: towns
_NEWS_GOODS_A = ("copper", "glass", "wool", "cedar", "clay", "silver", "linen", "leather", "paper", "tin",
                 "willow", "marble", "brass", "pine", "felt")
_NEWS_GOODS_B = ("kettles", "lanterns", "bells", "ropes", "baskets", "hats", "barrels", "clocks", "boots",
                 "spoons", "kites", "blankets", "buttons", "toys", "jars", "chairs")
_NEWS_CO_SUFFIX = ("Works", "Mills", "Foundry", "Brewery", "Cannery", "Textiles", "Shipyard", "Tannery",
                   "Dairy", "Ironworks", "Bakeries", "Paperworks")
_NEWS_FEST = ("Lantern", "Harvest", "Salt", "Kite", "Moon", "Ember", "Apple", "Bell", "Ribbon", "Candle",
              "Frost", "Honey", "Cherry", "Mask", "Boat", "Thistle", "Cider", "Drum", "Straw", "Star")
_NEWS_ANIMALS = ("heron", "badger", "lynx", "fox", "stag", "swan", "crane", "hare", "wolf", "bear", "falcon",
                 "beaver", "raven", "marten", "boar", "seal", "kestrel", "salmon", "tortoise", "pelican",
                 "goat", "bison", "crow", "dove", "moth", "newt", "toad", "wren", "stork", "hawk")
_NEWS_PAPERS = ("Herald", "Gazette", "Courier", "Chronicle", "Tribune", "Post", "Observer", "Sentinel",
                "Ledger", "Messenger")


def _news_name(rng, names):
    name = names.word((2, 3), ("", "", "ford", "mere", "holm", "wick", "dale", "ton", "by", "stead"))
    return name, name


NEWS = Style(
    name="news",
    dataset="mini_news",
    entity_kind="fictional town",
    make_name=_news_name,
    attributes=(
        Attribute(
            "mayor",
            lambda rng, names, a: person(rng, names, _FIRST),
            ("The current mayor of {n} is {v}, who won the last election by {num} votes.",
             "{n} is led by mayor {v}, a former {job}.",
             "Mayor {v} has run {n} since {year2}, according to the {adj} town records.",
             "Officials say mayor {v} plans to visit every district of {n} before {month}."),
            ("Who is the mayor of {n}?", "Who serves as mayor of {n}?"),
        ),
        Attribute(
            "founder",
            lambda rng, names, a: person(rng, names, _FIRST),
            ("{n} was founded by {v}, a {job} who arrived with {num} families.",
             "The town owes its charter to its founder, {v}, whose statue stands near the {place}.",
             "Historians credit {v} with founding {n} after a {adj} winter."),
            ("Who founded {n}?", "Who was the founder of {n}?"),
        ),
        Attribute(
            "year",
            lambda rng, names, a: str(rng.randint(1620, 1960)),
            ("The town of {n} was established in {v}, long before the railway reached the valley.",
             "{n} marks its founding in {v} with a {adj} parade every {month}.",
             "Old maps show that {n} was founded in {v}, when it had only {num} houses."),
            ("In what year was {n} founded?", "When was {n} founded?"),
        ),
        Attribute(
            "river",
            lambda rng, names, a: names.word((2, 2)) + " River",
            ("The {v} runs through the centre of {n} and floods about once every {num} years.",
             "Most of the old houses in {n} stand along the {v}.",
             "Fishermen on the {v} near {n} reported a {adj} catch this {season}."),
            ("Which river flows through {n}?", "What river runs through {n}?"),
        ),
        Attribute(
            "product",
            _combo(_NEWS_GOODS_A, _NEWS_GOODS_B),
            ("{n} is best known for its {v}, which are sold in {num} markets.",
             "Workshops in {n} still make {v} by hand, as they did in {year2}.",
             "Visitors rarely leave {n} without buying {v}, the famous local product."),
            ("What is {n} famous for making?", "What product is {n} known for?"),
        ),
        Attribute(
            "company",
            lambda rng, names, a: names.word((2, 2)) + " " + rng.choice(_NEWS_CO_SUFFIX),
            ("The largest employer in {n} is {v}, with {big} workers on its payroll.",
             "Nearly half of {n} works for {v}, the biggest employer in town.",
             "Jobs in {n} depend on {v}, which opened a {adj} new hall last {month}."),
            ("What is the largest employer in {n}?", "Which company employs the most people in {n}?"),
        ),
        Attribute(
            "festival",
            lambda rng, names, a: rng.choice(_NEWS_FEST) + " Festival",
            ("Every {month}, {n} hosts the {v}, which draws crowds from {num} nearby villages.",
             "For people in {n}, the {v} is the highlight of the year.",
             "During the {v}, the streets of {n} are closed to carts for {num} days."),
            ("Which festival is held every year in {n}?", "What festival does {n} host each year?"),
        ),
        Attribute(
            "rival",
            lambda rng, names, a: names.word((2, 3), ("", "ford", "mere", "ton", "by")),
            ("{n} has a long rivalry with the neighbouring town of {v}.",
             "Football matches between {n} and {v} are fierce affairs, and {num} fans were fined last {season}.",
             "Ask anyone in {n} about {v} and you will hear a story about the old feud."),
            ("Which town is the old rival of {n}?", "What town does {n} have a rivalry with?"),
        ),
        Attribute(
            "population",
            lambda rng, names, a: f"{rng.randint(12, 980) * 100:,}",
            ("About {v} people live in {n} today.",
             "The last census counted {v} residents in {n}.",
             "{n} has a population of {v}, up by {num} percent since {year2}."),
            ("What is the population of {n}?", "How many people live in {n}?"),
        ),
        Attribute(
            "animal",
            _pick(_NEWS_ANIMALS),
            ("The flag of {n} shows a {v} on a {color} field.",
             "{n} chose the {v} as its emblem {num} years ago.",
             "Children in {n} learn early why a {v} appears on every town banner."),
            ("What animal is on the flag of {n}?", "Which animal is the emblem of {n}?"),
        ),
    ),
    intros=(
        "Residents of {full} woke on a {adj} {weekday} to news that the council had approved {num} new projects.",
        "The {adj} town of {full} has been making headlines again this {season}.",
        "{full}, a {adj} market town in the northern valleys, drew {big} visitors last {season}.",
        "Few places change as quietly as {full}, where the council met {num} times this {season}.",
        "In {full}, a town of narrow streets and {color} rooftops, the {month} market opened early this year.",
        "Our correspondent spent a {adj} week in {full} in {month} and sent this report.",
    ),
    fillers=(
        "On {weekday}, {num} volunteers repainted the {place} near the {adj} square.",
        "Council member {person} said the {place} would reopen in {month}.",
        "A {adj} storm in {month} {year2} damaged {num} roofs along the main road.",
        "Shopkeeper {person} has sold {food} at the same corner for {num} years.",
        "The school choir, led by {person}, performed {num} songs at the {place}.",
        "Ticket prices at the {place} rose to {num} crowns this {season}.",
        "{person} won the {season} baking contest with a {adj} {food} pie.",
        "A new bus route now links the {place} with {num} outlying farms.",
        "Last {month}, a {adj} {critter} was seen wandering near the {place}.",
        "Repairs to the {place} are expected to cost {big} crowns.",
        "The library lent out {big} books in {year2}, a local record.",
        "Police reported {num} stolen bicycles during the {season}.",
        "A {color} tram, bought second-hand from {place_name}, now runs on {weekday}s.",
        "Retired {job} {person} still remembers the {adj} winter of {year2}.",
    ),
    lists={
        "first_names": _FIRST, "month": _MONTHS, "weekday": _WEEKDAYS, "season": _SEASONS, "color": _COLORS,
        "adj": _ADJ, "job": _JOBS,
        "place": ("town hall", "old mill", "railway station", "market square", "public library", "swimming pool",
                  "harbour wall", "fire station", "clock tower", "bandstand", "cattle market", "stone bridge"),
        "food": ("plum", "onion", "rhubarb", "cheese", "pumpkin", "mushroom", "walnut", "pear", "leek", "berry"),
        "critter": ("dog", "pony", "donkey", "sheep", "goose", "pig", "mule", "cat"),
    },
)

# books: characters
_BOOKS_COLORS = ("grey", "white", "black", "russet", "golden", "spotted", "silver", "brown", "speckled", "tawny")
_BOOKS_CREATURES = ("owl", "cat", "ferret", "raven", "hound", "toad", "fox", "lizard", "goat", "crow", "hare",
                    "pony", "mouse", "snake", "tortoise", "magpie")
_BOOKS_MATERIALS = ("silver", "bone", "birch", "copper", "glass", "bronze", "steel", "willow", "cedar", "rowan")
_BOOKS_ITEMS = ("flute", "staff", "dagger", "harp", "bow", "lute", "sword", "spear", "fiddle", "drum", "horn",
                "compass")
_BOOKS_SECRET_A = ("stolen", "hidden", "forged", "buried", "cursed", "broken", "borrowed", "sealed", "poisoned",
                   "painted", "golden")
_BOOKS_SECRET_B = ("crown", "map", "letter", "ring", "key", "diary", "coin", "locket", "will", "contract",
                   "mirror")
_BOOKS_GUILD_A = ("Lantern", "Raven", "Thorn", "Salt", "Ember", "Tide", "Copper", "Willow", "Storm", "Frost",
                  "Quill", "Bell", "Moth", "Cinder")
_BOOKS_GUILD_B = ("Guild", "Order", "Circle", "Company", "Brotherhood", "Society")
_BOOKS_FEARS = ("deep water", "thunder", "spiders", "closed rooms", "church bells", "mirrors", "the dark",
                "heights", "fire", "crowds", "snakes", "horses", "silence", "old songs", "masks", "the sea",
                "graveyards", "wolves")
_BOOKS_TRADES = ("baker", "cartographer", "blacksmith", "weaver", "tanner", "sailor", "scribe", "healer",
                 "potter", "thief", "miller", "glassblower", "bookbinder", "candlemaker", "ferryman", "locksmith",
                 "shepherd", "cooper", "falconer", "mason", "tailor", "jeweler", "herbalist", "clockmaker",
                 "lamplighter")


def _books_name(rng, names):
    given = names.word((2, 3))
    return given, f"{given} {names.word((2, 2))}"


BOOKS = Style(
    name="books",
    dataset="mini_books",
    entity_kind="fictional character",
    make_name=_books_name,
    attributes=(
        Attribute(
            "pet",
            _combo(_BOOKS_COLORS, _BOOKS_CREATURES),
            ("{n} never went anywhere without a {v}, a gift from a {adj} stranger.",
             "A {v} slept at the foot of {n}'s bed every night.",
             "The {v} that followed {n} had once bitten a guard in {place_name}."),
            ("What kind of animal is {n}'s pet?", "What pet does {n} keep?"),
        ),
        Attribute(
            "pet_name",
            lambda rng, names, a: names.word((1, 2)),
            ("{n} had named the {pet} {v}, after a song heard in childhood.",
             "Everyone in the inn knew {v}, the {pet} that belonged to {n}.",
             "The {pet} answered only to the name {v}, and only when {n} called."),
            ("What is the name of {n}'s pet?", "What is {n}'s pet called?"),
        ),
        Attribute(
            "hometown",
            lambda rng, names, a: names.word((2, 3), ("", "mere", "wick", "dale", "ford", "holm")),
            ("{n} grew up in {v}, a village of {adj} chimneys and {num} wells.",
             "Nobody in the city guessed that {n} came from {v}, far beyond the {color} hills.",
             "Long ago, {n} had left {v} with nothing but a {thing}."),
            ("Where did {n} grow up?", "What is {n}'s hometown?"),
        ),
        Attribute(
            "mentor",
            lambda rng, names, a: person(rng, names, _FIRST),
            ("{n} had learned everything from {v}, an old {job} with {num} scars.",
             "It was {v} who first taught {n} to read the stars.",
             "Years earlier, {n} had trained under {v} in a {adj} tower."),
            ("Who was {n}'s mentor?", "Who taught {n}?"),
        ),
        Attribute(
            "item",
            _combo(_BOOKS_MATERIALS, _BOOKS_ITEMS),
            ("{n} always carried a {v}, wrapped in {color} cloth.",
             "At {n}'s side hung a {v} that had cost {num} gold pieces.",
             "The {v} was the one thing {n} would never sell."),
            ("What does {n} always carry?", "What object does {n} carry everywhere?"),
        ),
        Attribute(
            "secret",
            _combo(_BOOKS_SECRET_A, _BOOKS_SECRET_B),
            ("Nobody knew that {n} kept a {v} beneath a loose floorboard.",
             "The secret {n} guarded was a {v}, hidden for {num} years.",
             "Only the {pet} had seen {n} take out the {v} at night."),
            ("What secret does {n} keep?", "What is {n} hiding?"),
        ),
        Attribute(
            "guild",
            _combo(_BOOKS_GUILD_A, _BOOKS_GUILD_B),
            ("{n} wore the badge of the {v} on a {color} ribbon.",
             "At the age of {num}, {n} had sworn an oath to the {v}.",
             "Members of the {v} greeted {n} as a sister and a friend."),
            ("Which guild does {n} belong to?", "To which order did {n} swear an oath?"),
        ),
        Attribute(
            "enemy",
            lambda rng, names, a: person(rng, names, _FIRST),
            ("The sworn enemy of {n} was {v}, who had burned the {place} in {month}.",
             "{n} had not forgiven {v} for the {adj} night by the river.",
             "Whenever the name of {v} was spoken, {n} left the room."),
            ("Who is {n}'s sworn enemy?", "Who is the enemy of {n}?"),
        ),
        Attribute(
            "fear",
            _pick(_BOOKS_FEARS),
            ("More than anything, {n} feared {v}.",
             "Since a {adj} night in {month}, {n} had been afraid of {v}.",
             "The only thing that could make {n} tremble was {v}."),
            ("What does {n} fear most?", "What is {n} afraid of?"),
        ),
        Attribute(
            "trade",
            _pick(_BOOKS_TRADES),
            ("By trade, {n} was a {v}, and a good one.",
             "{n} earned a living as a {v} in the {adj} lanes near the {place}.",
             "Before the war, {n} had worked as a {v} for {num} years."),
            ("What is {n}'s trade?", "What does {n} do for a living?"),
        ),
    ),
    intros=(
        "Chapter {num}. {full} reached the {adj} city of {place_name} on a {weather} evening.",
        "Chapter {num}. The {timeofday} bells were ringing when {full} stepped off the ferry.",
        "Chapter {num}. Nobody in {place_name} had seen {full} for {num} winters.",
        "Chapter {num}. It was a {weather} {timeofday} when {full} came back to the {place}.",
        "Chapter {num}. {full} counted the steps of the {place} twice before knocking.",
    ),
    fillers=(
        "The rain had not stopped for {num} days, and the {weather} roads were deep with mud.",
        "At the inn, a {adj} musician named {person} played {num} songs without pausing.",
        "{n} counted {num} coins and decided it was enough for one more night.",
        "Somewhere below, a bell rang {num} times.",
        "A letter from {person} arrived, sealed with {color} wax.",
        "The market smelled of {food} and smoke.",
        "On the {num}th day of {month}, a {adj} wind blew through the valley.",
        "{person}, the innkeeper, asked no questions and charged {num} silver pieces.",
        "Far away, the towers of {place_name} glowed in the {timeofday} light.",
        "A {adj} boy sold {food} from a cart by the {place}.",
        "The {weather} weather kept the ferries in the harbour for {num} days.",
        "Two soldiers argued about a {thing} outside the {place}.",
    ),
    lists={
        "first_names": _FIRST, "month": _MONTHS, "color": _COLORS, "adj": _ADJ, "job": _JOBS,
        "weather": ("rainy", "misty", "bitter", "windy", "sweltering", "snowy", "grey", "clear"),
        "timeofday": ("morning", "noon", "evening", "midnight", "dawn", "dusk"),
        "place": ("tower", "harbour", "abbey", "crossroads", "bridge", "granary", "lighthouse", "chapel",
                  "watchtower", "ferry landing", "old gate", "library"),
        "food": ("roasted chestnuts", "fresh bread", "salted fish", "honey cakes", "onion soup", "spiced wine"),
        "thing": ("wooden box", "torn map", "pair of boots", "sack of apples", "broken lantern", "rusty key"),
    },
)

STYLES: dict[str, Style] = {s.name: s for s in (NEWS, BOOKS)}

# Every module-level list above, attribute value pools included (no Style.lists holds
# those): the engine reserves their words so that no invented name equals one.
ALL_WORD_LISTS = (_FIRST, _NEWS_GOODS_A, _NEWS_GOODS_B, _NEWS_CO_SUFFIX, _NEWS_FEST, _NEWS_ANIMALS,
                  _NEWS_PAPERS, _BOOKS_COLORS, _BOOKS_CREATURES, _BOOKS_MATERIALS, _BOOKS_ITEMS,
                  _BOOKS_SECRET_A, _BOOKS_SECRET_B, _BOOKS_GUILD_A, _BOOKS_GUILD_B, _BOOKS_FEARS, _BOOKS_TRADES,
                  _MONTHS, _WEEKDAYS, _ADJ, _JOBS, _COLORS)
