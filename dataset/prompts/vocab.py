"""Word lists for the offline prompt generator: one profile per sub-class, plus shared photo vocabulary.

A prompt is only as varied as its lists: each sub-class frames its subject its own way (a bird perches, a dish
is plated, a profession is portrayed at work) so a leaf name always lands in a sentence that fits it. Settings
are kept neutral enough to suit every leaf of the sub-class. Sub-classes not listed here (a custom taxonomy) use
``GENERIC``. Frame placeholders: {subject} ("a curious red fox"), {a_attr} ("a curious"), {attr}, {name},
{action}, {setting}, {person}.
"""

from __future__ import annotations

from dataclasses import dataclass

NATURAL_LIGHT = (
    "soft golden hour light", "diffused overcast light", "crisp morning sunlight", "dramatic side light",
    "a cool blue-hour glow", "dappled sunlight", "warm late afternoon sun", "gentle backlight",
    "soft light after rain", "bright midday sun", "the last warm light of sunset", "silvery moonlight",
    "hazy morning light", "low winter sunlight",
)
INDOOR_LIGHT = (
    "warm window light", "soft studio lighting", "moody low-key lighting", "bright high-key lighting",
    "warm lamplight", "flickering candlelight", "a single overhead spotlight", "soft daylight from a skylight",
    "warm tungsten light", "gentle light from a nearby window", "cool diffused daylight", "soft bounced light",
)
MIXED_LIGHT = INDOOR_LIGHT + NATURAL_LIGHT[:8]
FESTIVE_LIGHT = NATURAL_LIGHT[:10] + ("warm lantern glow", "the twinkle of string lights", "the glow of a bonfire",
                                      "colorful stage lighting", "festive evening lighting")

LIGHT_VERBS = (
    "bathes the scene", "falls softly across the frame", "shapes every form", "fills the frame",
    "brings out the finest details", "adds depth and dimension", "gives the image a gentle glow",
    "picks out every texture",
)
SHADOWS = ("soft shadows", "long shadows", "gentle highlights", "crisp highlights", "deep, rich shadows",
           "subtle reflections", "a soft gradient of shade", "delicate contrast")

COMPOSITIONS = (
    "a low-angle view", "an eye-level view", "a wide establishing shot", "a tight close-up", "a three-quarter view",
    "a centered, symmetrical composition", "a rule-of-thirds composition", "a layered composition with strong depth",
    "a slightly elevated view", "a minimalist composition with negative space",
    "a diagonal composition with leading lines", "a balanced, off-center framing", "a medium shot",
    "a gentle high-angle view",
)
DEPTHS = ("a shallow depth of field", "soft background blur", "deep focus from front to back",
          "a gently blurred foreground", "creamy bokeh", "crisp focus on the subject",
          "a clean, uncluttered background")

MOODS = (
    "serene", "whimsical", "nostalgic", "dramatic", "peaceful", "vibrant", "mysterious", "cheerful",
    "contemplative", "cozy", "majestic", "playful", "dreamy", "energetic", "tranquil", "timeless", "hopeful",
    "quietly joyful", "wistful", "adventurous",
)
PALETTES = (
    "muted earth tones", "rich jewel tones", "soft pastel hues", "warm amber and teal", "cool blues and silvers",
    "vivid saturated colors", "warm golds and deep browns", "fresh greens and whites", "gentle creams and grays",
    "bold primary colors", "dusky pinks and purples", "deep greens and ochres", "crisp whites with red accents",
    "sun-bleached neutrals",
)

PHOTO_STYLES = (
    "shot on a full-frame camera with a 50mm lens", "captured on medium format film", "an editorial photograph",
    "a documentary-style photograph", "a cinematic still", "a 35mm film photograph with fine grain",
    "a high-resolution DSLR photo", "a professional photograph", "a candid snapshot",
    "shot on a mirrorless camera at f/2.8", "a large-format photograph", "a fine-art photograph",
)
RENDER_STYLES = (
    "a detailed digital painting", "a soft watercolor illustration", "a photorealistic 3D render",
    "a gouache storybook illustration", "an oil painting with visible brushstrokes", "a clean vector illustration",
    "a richly detailed concept art piece", "a soft pastel illustration", "a detailed pen and ink drawing",
    "an elegant ink and wash illustration",
)
QUALITY = (
    "highly detailed", "sharp focus", "rich textures", "fine detail throughout", "crisp detail", "natural colors",
    "true-to-life textures", "balanced exposure", "beautifully detailed", "clean and precise",
    "high dynamic range", "subtle film grain",
)
ART_QUALITY = ("highly detailed", "rich textures", "fine detail throughout", "crisp detail", "beautifully detailed",
               "clean and precise", "harmonious colors", "careful craftsmanship")
ART_FINISH = ("authentic to the medium", "gallery-quality finish", "museum-quality craftsmanship",
              "masterfully executed", "faithful to the traditional technique", "carefully crafted")
ART_SUBJECTS = (
    "a lighthouse on a stormy coast", "a fox curled up in fresh snow", "a bustling harbor town",
    "a quiet mountain village", "a child reading under an old tree", "a cat asleep on a sunny windowsill",
    "an old sailing ship at sea", "a cozy cafe at night", "a field of sunflowers", "a heron standing in a misty pond",
    "a market square at dusk", "a mountain road winding through pine forests", "a tea house beside a waterfall",
    "a hot air balloon over patchwork fields", "a koi pond in a quiet garden", "a city skyline after rain",
    "a cottage with smoke curling from its chimney", "an owl perched on a mossy branch",
    "a vase of wildflowers on a table", "a fishing boat at sunrise", "a snowy forest trail",
    "a train crossing a stone viaduct", "a street musician on a corner", "a greenhouse full of plants",
    "a whale surfacing beside a small boat", "a bicycle leaning against a flower-covered wall",
    "a dragonfly above a lily pond", "a caravan of camels crossing dunes", "a lantern-lit alley",
    "a rocky island with a single tree", "a family picnic by a lake", "a robot tending a rooftop garden",
)


@dataclass(frozen=True)
class Profile:
    """How one sub-class is described: subject framings and the lists that fill them."""

    frames: tuple[str, ...]
    attributes: tuple[str, ...]
    settings: tuple[str, ...]
    details: tuple[str, ...]
    actions: tuple[str, ...] = ("",)
    people: tuple[str, ...] = ("",)
    light: tuple[str, ...] = MIXED_LIGHT
    art: bool = False  # the category is itself a medium: no second style is added


_CREATURE_FRAMES = (
    "{subject} {action} {setting}", "a wildlife photograph of {subject} {action} {setting}",
    "a portrait of {subject} {setting}, {action}", "a close-up of {subject} {action} {setting}",
    "{subject} {setting}, {action}", "a nature documentary shot of {subject} {action} {setting}",
)
_OBJECT_FRAMES = (
    "{subject} {setting}", "a still life of {subject} {setting}", "a product photograph of {subject} {setting}",
    "a detailed close-up of {subject} {setting}", "a photograph of {subject} {setting}",
)
_NEUTRAL_SETTINGS = (
    "in a cozy, well-lit room", "in a bright minimalist studio", "against a seamless paper backdrop",
    "in a sunlit room with white walls", "on display in a small shop", "surrounded by soft shadows",
    "in a warm, lived-in home", "in a vintage interior", "in a quiet corner of a workshop",
    "against a deep green backdrop", "in a calm, airy space", "beside a tall window",
)
_OBJECT_DETAILS = (
    "fine surface texture", "small scratches that tell a story", "soft reflections", "crisp edges",
    "subtle signs of use", "carefully arranged props", "visible material grain", "precise craftsmanship",
    "delicate highlights on every curve", "a subtle cast shadow", "true-to-life proportions",
)

MAMMALS = Profile(
    frames=_CREATURE_FRAMES,
    attributes=("majestic", "curious", "young", "sleek", "playful", "alert", "calm", "gentle", "powerful",
                "graceful", "shy", "handsome", "watchful", "relaxed"),
    actions=("resting", "walking slowly", "looking straight at the camera", "grooming itself", "pausing to listen",
             "stretching lazily", "foraging", "standing alert", "sniffing the air", "curled up for a nap",
             "glancing over its shoulder", "stepping forward"),
    settings=("in a misty forest clearing", "on a rocky hillside", "in tall golden grass",
              "at the edge of a quiet river", "in fresh powdery snow", "among autumn leaves", "on a sunlit meadow",
              "near a fallen log", "in its natural habitat", "in a spacious wildlife sanctuary",
              "on a windswept plain", "beside a still pond"),
    details=("a finely detailed coat", "bright, alert eyes", "whiskers catching the light", "a faint mist of breath",
             "tiny water droplets on its coat", "natural markings in sharp detail", "ears turned toward a sound",
             "a softly blurred background", "paws resting on the ground", "a calm, steady gaze"),
    light=NATURAL_LIGHT,
)
BIRDS = Profile(
    frames=_CREATURE_FRAMES,
    attributes=("majestic", "colorful", "curious", "elegant", "vibrant", "alert", "graceful", "proud", "watchful",
                "striking", "beautiful", "lively"),
    actions=("perched on a branch", "in mid-flight", "spreading its wings", "preening its feathers", "calling out",
             "landing gracefully", "looking over its shoulder", "resting quietly", "taking off", "feeding",
             "standing on one leg", "fluffing its feathers"),
    settings=("in a misty forest", "above a calm lake", "in a blooming garden", "along a rocky shoreline",
              "in dense green foliage", "over open grassland", "near a reed-lined marsh",
              "in a snowy winter landscape", "against a clear blue sky", "in a tropical rainforest",
              "by a quiet riverbank", "on a weathered fence post"),
    details=("every feather crisply defined", "an iridescent sheen on its plumage", "a sharp, glinting eye",
             "delicate wing patterns", "motion frozen in a split second", "soft down on its chest",
             "a finely detailed beak", "subtle color gradients in the feathers", "a softly blurred background"),
    light=NATURAL_LIGHT,
)
AQUATIC = Profile(
    frames=_CREATURE_FRAMES + ("an underwater photograph of {subject} {action} {setting}",),
    attributes=("graceful", "vibrant", "curious", "elegant", "striking", "shimmering", "colorful", "young", "calm",
                "patterned", "majestic", "gentle"),
    actions=("gliding", "swimming slowly", "drifting", "turning gracefully", "rising toward the surface",
             "resting", "hovering in place", "moving with the current", "exploring"),
    settings=("through clear turquoise water", "over a vibrant coral reef", "in a shaft of sunlight underwater",
              "near a swaying kelp forest", "in the deep blue open water", "above a sandy seabed",
              "among swaying sea grass", "in a calm tidal pool", "in a large public aquarium",
              "beneath rippling surface light", "in crystal-clear shallows"),
    details=("shimmering scales or skin", "tiny bubbles rising", "caustic light patterns",
             "particles drifting in the water",
             "fine fin and body detail", "soft blue gradients in the background", "gentle ripples overhead",
             "natural patterns in sharp detail"),
    light=("sunlight filtering down through the water", "soft diffused underwater light", "bright tropical sunlight",
           "a cool blue ambient glow", "dappled light from the surface", "gentle light from above",
           "the soft glow of an aquarium", "shimmering surface light"),
)
SMALL_CREATURES = Profile(
    frames=_CREATURE_FRAMES + ("a macro photograph of {subject} {action} {setting}",),
    attributes=("vivid", "curious", "delicate", "striking", "patterned", "colorful", "bright", "remarkable",
                "beautiful", "glossy", "vibrant", "handsome"),
    actions=("resting", "crawling slowly", "basking in the sun", "perched quietly", "climbing", "pausing mid-step",
             "looking toward the lens", "half hidden among leaves", "warming itself"),
    settings=("on a dew-covered leaf", "on a mossy rock", "among wildflowers", "on a weathered branch",
              "in a lush rainforest", "near a quiet pond", "on warm sandy ground", "on the bark of an old tree",
              "among fallen leaves", "in a sunlit garden", "on a smooth river stone"),
    details=("intricate surface patterns", "tiny droplets on its body", "every scale or segment in sharp detail",
             "delicate shadows", "a creamy blurred background", "vivid natural coloring", "fine textures up close",
             "glistening highlights"),
    light=NATURAL_LIGHT,
)
PLANTS = Profile(
    frames=("{subject} {setting}", "a close-up of {subject} {setting}", "a botanical photograph of {subject} {setting}",
            "{subject} growing {setting}", "a nature photograph of {subject} {setting}"),
    attributes=("delicate", "vibrant", "dew-covered", "lush", "healthy", "wild", "sunlit", "graceful", "striking",
                "solitary", "rain-kissed", "luminous", "flourishing"),
    settings=("in a sunlit garden", "in a quiet forest clearing", "on a misty hillside", "beside a mossy stone wall",
              "in a wild meadow", "near a small stream", "on a rocky slope", "at the edge of a quiet park",
              "in a botanical garden", "after a gentle rain", "in a walled cottage garden"),
    details=("fine veins in the leaves", "droplets of dew", "soft bokeh of surrounding greenery",
             "a tiny insect resting nearby", "natural imperfections", "delicate shadows", "rich color variation",
             "intricate textures", "fresh new growth"),
    light=NATURAL_LIGHT,
)
PROFESSIONS = Profile(
    frames=("a portrait of {subject} {action} {setting}", "{subject} {action} {setting}",
            "an environmental portrait of {subject} {setting}, {action}",
            "a candid photograph of {subject} {action} {setting}", "{subject} {setting}, {action}"),
    attributes=("young", "seasoned", "middle-aged", "elderly", "cheerful", "focused", "thoughtful", "experienced",
                "friendly", "determined", "calm", "energetic", "meticulous", "proud"),
    actions=("at work", "pausing between tasks", "concentrating on a delicate task", "smiling warmly at the camera",
             "explaining their craft to an apprentice", "inspecting their work closely",
             "gazing out of a nearby window", "sharing a laugh with a colleague", "preparing for the day ahead",
             "taking a short break with a cup of tea"),
    settings=("surrounded by the tools of the trade", "in a bright, tidy workspace", "in a busy workplace",
              "in a small family business", "on an ordinary weekday morning", "in a workplace full of character",
              "against a softly blurred background", "at the start of a long shift"),
    details=("practical work clothes", "rolled-up sleeves", "hands that show years of experience",
             "well-used equipment within reach", "an expression of quiet concentration", "natural skin texture",
             "subtle smile lines", "neatly organized equipment", "small personal touches around the workspace"),
)
SPORTS = Profile(
    frames=("{person} enjoying {name} {setting}", "{a_attr} moment of {name} {setting}, featuring {person}",
            "{person} absorbed in {name} {setting}", "an action shot of {person} during {name} {setting}",
            "{a_attr} scene of {name}: {person} {setting}"),
    attributes=("dynamic", "joyful", "relaxed", "competitive", "spirited", "graceful", "intense", "carefree",
                "focused", "lively"),
    people=("a young athlete", "a group of friends", "a determined teenager", "a retired couple",
            "a family with two children", "a pair of teammates", "a solo enthusiast", "a woman in her thirties",
            "a man in his fifties", "a team of amateurs", "two old friends"),
    settings=("on a bright summer afternoon", "during an early morning session", "at a local club",
              "in front of a small cheering crowd", "on a crisp autumn day", "during a weekend getaway",
              "in a spacious, well-kept venue", "under a clear blue sky", "at a friendly local competition",
              "on a quiet weekday evening"),
    details=("expressions of concentration", "bright sportswear", "well-used equipment",
             "a sense of movement and energy",
             "natural, candid body language", "spectators softly out of focus", "crisp detail on hands and gear",
             "motion blur in the background"),
)
ATTIRE = Profile(
    frames=("{person} wearing {subject} {setting}", "a fashion photograph of {subject} worn by {person} {setting}",
            "{subject}, worn by {person} {setting}", "a street-style photograph of {person} in {subject} {setting}"),
    attributes=("elegant", "vintage", "modern", "tailored", "colorful", "classic", "handmade", "minimalist",
                "richly patterned", "understated", "luxurious", "cozy", "bold", "timeless"),
    people=("a fashion model", "a smiling model", "a model with curly hair", "a model with short silver hair",
            "a young model with freckles", "an elderly model with a warm smile", "a dancer",
            "a street-style enthusiast", "a model in mid-stride", "a tall model with braided hair"),
    settings=("on a city sidewalk", "in a minimalist photo studio", "in a sunlit courtyard", "in a blooming garden",
              "on a windswept beach", "on an old stone staircase", "in front of a pastel-colored wall",
              "on a busy train platform", "in a grand hotel hallway", "on a quiet autumn street"),
    details=("visible fabric texture", "carefully finished seams", "subtle patterns in the weave",
             "natural folds and drape", "coordinated accessories", "a relaxed, confident pose", "fine stitching",
             "soft creases in the fabric"),
)
EVENTS = Profile(
    frames=("a scene from {subject} {setting}", "people gathered for {subject} {setting}",
            "{subject} {setting}, full of life", "a candid photograph taken at {subject} {setting}",
            "{person} at {subject} {setting}"),
    attributes=("joyful", "colorful", "bustling", "intimate", "festive", "traditional", "lively", "cheerful",
                "warm", "memorable", "small-town", "grand"),
    people=("families", "a group of friends", "children and grandparents", "a crowd of visitors", "neighbors",
            "local residents", "a young couple"),
    settings=("in a historic town square", "along a riverside promenade", "in a seaside village",
              "on a crowded city street", "in a leafy park", "at a family home", "in a decorated community hall",
              "on a warm summer evening", "on a cold winter night", "in a small mountain town"),
    details=("people in colorful clothing", "strings of lights overhead", "laughing children", "bright decorations",
             "tables laden with food", "candid, joyful expressions", "confetti drifting through the air",
             "musicians playing nearby"),
    light=FESTIVE_LIGHT,
)
FOOD = Profile(
    frames=("{a_attr} serving of {name} {setting}", "{attr} {name} {setting}", "a close-up of {attr} {name} {setting}",
            "an overhead shot of {attr} {name} {setting}", "a food photograph of {attr} {name} {setting}"),
    attributes=("freshly made", "homemade", "beautifully plated", "rustic", "gourmet", "artisanal", "classic",
                "traditional", "generous", "delicate", "colorful", "simple", "elegant"),
    settings=("on a rustic wooden table", "on a marble countertop", "on a linen tablecloth", "at a sunny cafe table",
              "on a dark slate board", "beside a rain-streaked window", "at a busy street food stall",
              "on a picnic blanket in a park", "on a hand-painted ceramic plate", "in a cozy family kitchen",
              "on a restaurant counter"),
    details=("glistening highlights", "crumbs and small garnishes", "fresh herbs scattered around",
             "a linen napkin nearby", "careful plating", "rich, appetizing colors", "a hand reaching into the frame",
             "cutlery placed to one side", "natural imperfections that feel real"),
)
VEHICLES = Profile(
    frames=("{subject} {setting}", "a photograph of {subject} {setting}", "a detailed view of {subject} {setting}",
            "{subject} {setting}, seen in full"),
    attributes=("vintage", "gleaming", "weathered", "brightly painted", "restored", "well-maintained", "sleek",
                "sturdy", "classic", "modern", "colorful", "beautifully kept"),
    settings=("seen against a dramatic sky", "on display at an outdoor exhibition",
              "photographed in a spacious museum hall", "in a scenic coastal setting", "framed by rolling green hills",
              "in front of an old industrial warehouse", "near a busy harbor", "at the edge of a quiet town",
              "under a clear blue sky", "in a mountain landscape"),
    details=("reflections on polished surfaces", "small signs of wear", "fine mechanical details", "crisp paintwork",
             "rivets and panel lines", "a sense of scale", "a clean, uncluttered background", "a fine layer of dust"),
    light=NATURAL_LIGHT,
)
HOUSEHOLD = Profile(
    frames=_OBJECT_FRAMES,
    attributes=("vintage", "handcrafted", "well-loved", "polished", "antique", "modern", "minimalist", "colorful",
                "elegant", "weathered", "simple", "ornate", "sturdy", "charming"),
    settings=_NEUTRAL_SETTINGS,
    details=_OBJECT_DETAILS,
)
GADGETS = Profile(
    frames=_OBJECT_FRAMES,
    attributes=("vintage", "finely made", "polished", "well-used", "modern", "sleek", "classic", "handcrafted",
                "beautifully kept", "precise", "sturdy", "antique"),
    settings=_NEUTRAL_SETTINGS,
    details=_OBJECT_DETAILS + ("tiny screws and joints", "fine engraved markings"),
)
LANDSCAPES = Profile(
    frames=("a sweeping view of {subject} {setting}", "{subject} {setting}",
            "a panoramic photograph of {subject} {setting}", "a quiet view across {subject} {setting}",
            "an aerial view of {subject} {setting}"),
    attributes=("vast", "remote", "pristine", "windswept", "sunlit", "mist-shrouded", "tranquil", "rugged",
                "breathtaking", "untouched", "serene", "wild"),
    settings=("at sunrise", "under a star-filled sky", "after a summer storm", "in the first snow of winter",
              "beneath drifting clouds", "on a calm autumn morning", "at dusk", "in thick morning fog",
              "under a bright midday sun", "in the soft light of late spring"),
    details=("a sense of vast scale", "fine texture in the rocks and vegetation",
             "soft atmospheric haze in the distance",
             "a small hiker for scale", "clouds casting moving shadows", "birds circling in the distance",
             "a winding path leading the eye", "layers of distant terrain"),
    light=NATURAL_LIGHT,
)
BUILDINGS = Profile(
    frames=("{subject} {setting}", "an architectural photograph of {subject} {setting}",
            "a view of {subject} {setting}", "a travel photograph of {subject} {setting}"),
    attributes=("striking", "elegant", "weathered", "well-preserved", "imposing", "charming", "grand", "quiet",
                "iconic", "ornate", "graceful", "beautiful"),
    settings=("on a hilltop", "beside a calm river", "in a quiet village", "surrounded by gardens",
              "at the edge of a forest", "in a bustling old town", "on a rocky coast",
              "against a backdrop of mountains",
              "on a wide, empty plaza", "across a still reflecting pool"),
    details=("fine surface detail", "weathering on the walls", "people walking nearby for scale",
             "intricate rooflines", "windows catching the light", "carefully tended surroundings",
             "birds circling overhead", "clean architectural lines"),
    light=NATURAL_LIGHT,
)
SCENES = Profile(
    frames=("a view of {subject} {setting}", "a scene in {subject} {setting}", "{subject} {setting}",
            "a wide photograph of {subject} {setting}", "a quiet corner of {subject} {setting}"),
    attributes=("bustling", "quiet", "cozy", "colorful", "sunlit", "old-fashioned", "modern", "tidy", "lively",
                "charming", "spacious", "atmospheric"),
    settings=("on a rainy evening", "early in the morning", "at closing time", "during a busy lunch hour",
              "on a quiet Sunday afternoon", "late at night", "on a snowy winter day", "on a warm summer afternoon",
              "just after opening", "in the calm before the crowds arrive"),
    details=("a few people going about their day", "reflections on polished surfaces", "many small details to discover",
             "warm pools of light", "plants adding touches of green", "well-worn floors", "signs of everyday life",
             "blurred figures in motion"),
)
ART = Profile(
    frames=("{subject} depicting {setting}", "{subject} of {setting}", "{setting}, rendered as {subject}",
            "{subject} showing {setting}"),
    attributes=("detailed", "expressive", "delicate", "bold", "vibrant", "minimal", "intricate", "whimsical",
                "atmospheric", "luminous", "masterful", "charming"),
    settings=ART_SUBJECTS,
    details=("visible texture of the medium", "confident, expressive strokes", "a limited color palette",
             "fine, precise linework", "subtle tonal gradients", "bold graphic shapes", "rich layered texture",
             "delicate hand-made details", "strong contrast between light and dark"),
    art=True,
)
GENERIC = Profile(
    frames=("{subject} {setting}", "a detailed image of {subject} {setting}", "a photograph of {subject} {setting}"),
    attributes=("striking", "beautiful", "detailed", "classic", "modern", "vintage", "elegant", "colorful"),
    settings=_NEUTRAL_SETTINGS + ("under a clear blue sky", "in a quiet outdoor setting"),
    details=_OBJECT_DETAILS,
)

PROFILES: dict[str, Profile] = {
    "mammals": MAMMALS,
    "birds": BIRDS,
    "aquatic_life": AQUATIC,
    "insects_reptiles_amphibians": SMALL_CREATURES,
    "plants_and_fungi": PLANTS,
    "professions": PROFESSIONS,
    "sports_and_recreation": SPORTS,
    "fashion_and_attire": ATTIRE,
    "festivals_and_traditions": EVENTS,
    "food_and_drink": FOOD,
    "vehicles_and_transport": VEHICLES,
    "household_objects": HOUSEHOLD,
    "instruments_tools_and_gadgets": GADGETS,
    "natural_landscapes": LANDSCAPES,
    "architecture_and_landmarks": BUILDINGS,
    "urban_and_interior_scenes": SCENES,
    "art_styles": ART,
}


def profile_for(sub: str) -> Profile:
    """The profile of a sub-class; ``GENERIC`` for sub-classes of a custom taxonomy."""
    return PROFILES.get(sub, GENERIC)
