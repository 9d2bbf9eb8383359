"""The prompt vocabulary: words (with synonyms and plurals) → a :class:`Scene`.

Everything the engine can draw is listed in the tables below; ``docs/engine.md`` documents
the same tables for users. Parsing is purely lexical: lower-case words, simple plural
stripping, a few two-word phrases ("golden hour", "burning ship", "palm trees").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from PIL import ImageColor

RGB = tuple[int, int, int]

# canonical element → words that mean it (singular forms; plurals are handled by _singular).
TERRAIN: dict[str, tuple[str, ...]] = {
    "mountains": ("mountain", "mount", "peak", "range", "alps", "alpine", "ridge", "summit"),
    "hills": ("hill", "hilly", "rolling", "valley", "countryside"),
    "desert": ("desert", "dune", "sand", "sandy", "sahara"),
    "island": ("island", "isle", "atoll", "archipelago"),
    "beach": ("beach", "coast", "coastal", "shore", "seaside", "shoreline"),
    "canyon": ("canyon", "gorge", "mesa", "cliff", "butte"),
    "snow": ("snow", "snowy", "snowcapped", "glacier", "winter", "icy", "frozen"),
    "volcano": ("volcano", "volcanic", "lava", "eruption", "erupting", "magma"),
}
WATER: dict[str, tuple[str, ...]] = {
    "lake": ("lake", "pond", "lagoon", "reservoir", "tarn", "loch"),
    "sea": ("sea", "ocean", "bay", "wave", "marine", "gulf"),
    "river": ("river", "stream", "creek", "brook"),
    "waterfall": ("waterfall", "cascade", "falls"),
}
VEGETATION: dict[str, tuple[str, ...]] = {
    "forest": ("forest", "wood", "woodland", "tree", "jungle", "grove", "oak"),
    "palms": ("palm", "tropical", "coconut"),
    "pines": ("pine", "conifer", "spruce", "fir", "evergreen", "taiga"),
    "ferns": ("fern", "frond", "bracken"),
    "grass": ("grass", "grassy", "meadow", "field", "prairie", "lawn", "grassland"),
    "flowers": ("flower", "blossom", "wildflower", "bloom", "floral", "tulip", "poppy"),
}
SKY: dict[str, tuple[str, ...]] = {
    "clear": ("clear", "cloudless", "sunny"),
    "clouds": ("cloud", "cloudy", "storm", "stormy"),
    "fog": ("fog", "foggy", "mist", "misty", "haze", "hazy"),
    "stars": ("star", "starry", "starlit", "milky"),
    "moon": ("moon", "moonrise", "crescent"),
    "aurora": ("aurora", "borealis", "australis"),
    "rainbow": ("rainbow",),
}
TIME_OF_DAY: dict[str, tuple[str, ...]] = {
    "sunrise": ("sunrise", "dawn", "daybreak"),
    "morning": ("morning",),
    "noon": ("noon", "midday", "daytime"),
    "afternoon": ("afternoon",),
    "golden hour": ("golden",),
    "sunset": ("sunset", "sundown", "evening"),
    "dusk": ("dusk", "twilight"),
    "night": ("night", "midnight", "nighttime", "nocturnal"),
    "moonlight": ("moonlight", "moonlit"),
    "overcast": ("overcast", "gloomy"),
    "studio": ("studio",),
    "dramatic": ("dramatic",),
    "soft": ("soft",),
}
ABSTRACT: dict[str, tuple[str, ...]] = {
    "mandelbrot": ("mandelbrot",),
    "julia": ("julia",),
    "burning ship": (),  # phrase only, see PHRASES
    "flame": ("flame", "ifs"),
    "spiral": ("spiral", "vortex", "swirl", "fibonacci", "phyllotaxis"),
    "galaxy": ("galaxy", "cosmos", "cosmic", "space", "universe"),
    "nebula": ("nebula", "nebulae"),
    "snowflake": ("snowflake", "koch", "crystal"),
    "tree": (),  # "fractal tree": decided in parse_prompt
    "dragon": ("dragon",),
}
# Two-word phrases, matched before single words: phrase → (table name, canonical element).
PHRASES: dict[str, tuple[str, str]] = {
    "golden hour": ("time", "golden hour"),
    "blue hour": ("time", "dusk"),
    "burning ship": ("abstract", "burning ship"),
    "fractal flame": ("abstract", "flame"),
    "dragon curve": ("abstract", "dragon"),
    "palm tree": ("vegetation", "palms"),
    "pine tree": ("vegetation", "pines"),
    "northern light": ("sky", "aurora"),
    "southern light": ("sky", "aurora"),
    "crystal clear": ("sky", "clear"),
    "snow capped": ("terrain", "snow"),
}
# Words that only nudge the parse: "fractal" turns "tree" into the abstract fractal tree.
ABSTRACT_HINTS = ("fractal", "abstract", "recursive", "geometric", "pattern")
# Generic words for water when no specific kind is named.
GENERIC_WATER = ("water", "reflection", "reflective", "reflecting", "mirror")

_TABLES = {
    "terrain": TERRAIN,
    "water": WATER,
    "vegetation": VEGETATION,
    "sky": SKY,
    "time": TIME_OF_DAY,
    "abstract": ABSTRACT,
}
_LOOKUP: dict[str, tuple[str, str]] = {}
for _table, _entries in _TABLES.items():
    for _canonical, _words in _entries.items():
        for _word in _words:
            _LOOKUP.setdefault(_word, (_table, _canonical))
_PHRASE_WORDS = {part for phrase in PHRASES for part in phrase.split()}
_VOCABULARY_WORDS = frozenset(_LOOKUP) | set(GENERIC_WATER) | set(ABSTRACT_HINTS) | _PHRASE_WORDS
_WORD = re.compile(r"#[0-9a-f]{6}\b|#[0-9a-f]{3}\b|[a-z][a-z']*")


@dataclass(frozen=True)
class Scene:
    """What the engine recognised in a prompt (canonical element names, in prompt order)."""

    prompt: str
    terrain: tuple[str, ...] = ()
    water: tuple[str, ...] = ()
    vegetation: tuple[str, ...] = ()
    sky: tuple[str, ...] = ()
    time_of_day: str | None = None
    abstract: tuple[str, ...] = ()
    colours: tuple[RGB, ...] = ()
    unknown: tuple[str, ...] = ()
    wants_water: bool = False

    @property
    def is_landscape(self) -> bool:
        return bool(self.terrain or self.water or self.vegetation or self.wants_water) or (
            not self.abstract and bool(self.sky or self.time_of_day)
        )

    @property
    def is_abstract(self) -> bool:
        return not self.is_landscape


def stable_hash(text: str) -> int:
    """A 63-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def prompt_key(prompt: str) -> str:
    """The normalised prompt the engine hashes: lower case, single spaces."""
    return " ".join(prompt.lower().split())


def _singular(word: str) -> str:
    if word in _VOCABULARY_WORDS:
        return word
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            candidate = word[: -len(suffix)] + repl
            if candidate in _VOCABULARY_WORDS:
                return candidate
    return word


def _colour(word: str) -> RGB | None:
    if word.startswith("#") or word in ImageColor.colormap:
        try:
            rgb = ImageColor.getrgb(word)
        except ValueError:
            return None
        return (rgb[0], rgb[1], rgb[2])
    return None


def _add(found: dict[str, list[str]], table: str, canonical: str) -> None:
    if canonical not in found[table]:
        found[table].append(canonical)


def parse_prompt(prompt: str) -> Scene:
    """Recognise terrain, water, vegetation, sky, time of day, abstract fractals and colours."""
    text = prompt.lower().replace("_", " ").replace("-", " ")
    words = [_singular(w.strip("'")) for w in _WORD.findall(text)]
    words = [w for w in words if w]
    found: dict[str, list[str]] = {name: [] for name in _TABLES}
    colours: list[RGB] = []
    unknown: list[str] = []
    wants_water = False
    hinted_abstract = any(w in ABSTRACT_HINTS for w in words)
    trees_seen = False
    i = 0
    while i < len(words):
        word = words[i]
        if i + 1 < len(words):
            pair = f"{word} {words[i + 1]}"
            if pair in PHRASES:
                _add(found, *PHRASES[pair])
                i += 2
                continue
            joined = word + words[i + 1]
            if joined in ImageColor.colormap and joined not in _VOCABULARY_WORDS:
                colours.append(_colour(joined) or (0, 0, 0))
                i += 2
                continue
        if word in _LOOKUP:
            if word == "tree":
                trees_seen = True
            if not (word == "tree" and hinted_abstract):
                _add(found, *_LOOKUP[word])
        elif word in GENERIC_WATER:
            wants_water = True
        elif (rgb := _colour(word)) is not None:
            colours.append(rgb)
        elif len(word) > 2 and word not in _VOCABULARY_WORDS:
            unknown.append(word)
        i += 1
    landscape = found["terrain"] or found["water"] or wants_water
    if trees_seen and hinted_abstract and not landscape:
        _add(found, "abstract", "tree")
    elif trees_seen and hinted_abstract:
        _add(found, "vegetation", "forest")
    times = found["time"]
    return Scene(
        prompt=prompt,
        terrain=tuple(found["terrain"]),
        water=tuple(found["water"]),
        vegetation=tuple(found["vegetation"]),
        sky=tuple(found["sky"]),
        time_of_day=times[0] if times else None,
        abstract=tuple(found["abstract"]),
        colours=tuple(dict.fromkeys(colours)),
        unknown=tuple(dict.fromkeys(unknown)),
        wants_water=wants_water,
    )
