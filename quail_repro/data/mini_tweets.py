"""The embedded Twitter-misinformation default: short posts about fictional claims.

Each claim (an invented town, body or product and something said about it) is labelled
misinformation or reliable at random, so a claim's label cannot be inferred from its words:
a classifier knows it only by having trained on posts about it. Posts also carry a style
cue (alarmist wording vs sourced wording) that agrees with the label in ``cue_agreement`` of
the posts, so a model that never saw a claim still does better than chance. Forgetting a set
of claims therefore has a measurable effect: the retrained model is left with the cue alone.
"""
from __future__ import annotations

import random

LABELS = ("reliable", "misinformation")
# every claim gets a place of its own (prefix + suffix): a place seen in no training post says
# nothing about a claim's label, so forgetting a claim cannot be undone by its place's other claims
PLACE_PARTS = (("Har", "Dun", "Cal", "Orr", "West", "Brack", "Tam", "Vel", "Kir", "Ash", "Mar", "Pen", "Quil",
                "Ros", "Stave", "Tun"), ("low", "mere", "vik", "fold", "ley", "sin", "den", "row", "grove", "field"))
SUBJECTS = ("the water board", "the city council", "the regional hospital", "the transit authority",
            "the school district", "the power company", "the farmers' union", "the health office",
            "the port authority", "the university", "the police department", "the weather service")
EVENTS = ("is adding fluoride twice the legal limit", "will close the main bridge for a year",
          "has banned cash payments", "is tracking phones through the new lampposts",
          "cancelled the spring vaccinations", "found lead in the reservoir", "is selling the public park",
          "will double bus fares in May", "approved a new wind farm", "reported record crop losses",
          "is hiding a chemical spill", "hired a foreign security firm", "moved the election to June",
          "is recalling every school laptop", "opened a free night clinic", "lost its emergency funding")
ALARMIST = ("BREAKING:", "They don't want you to know:", "WAKE UP.", "Share before they delete this!",
            "Nobody is talking about this:", "URGENT!!", "My cousin who works there says")
SOURCED = ("According to the official statement,", "Report:", "Update from the press briefing:",
           "Confirmed by the local paper:", "Per today's public notice,", "Fact check:", "News:")
ALARMIST_END = ("#wakeup", "RT to spread the word", "do your own research", "!!!", "#coverup", "they lied again")
SOURCED_END = ("(link in bio)", "details at the council site", "#localnews", "via the county report",
               "statement attached", "more at 6pm")
PHRASINGS = ("{place}: {subject} {event}.", "{subject} in {place} {event}.", "So {subject} of {place} {event}.",
             "Heard that {subject} in {place} {event}.", "{place} update - {subject} {event}.")


def _claims(rng: random.Random, n_claims: int) -> list[dict]:
    places = [a + b for a in PLACE_PARTS[0] for b in PLACE_PARTS[1]]
    if n_claims > len(places):
        raise ValueError(f"mini_tweets: at most {len(places)} claims (one place each), asked for {n_claims}")
    rng.shuffle(places)
    return [{"id": f"claim{i:03d}", "place": p, "subject": rng.choice(SUBJECTS), "event": rng.choice(EVENTS),
             "label": rng.randrange(2)} for i, p in enumerate(places[:n_claims])]


def _post(rng: random.Random, claim: dict, cue_agreement: float) -> dict:
    alarmist = (claim["label"] == 1) == (rng.random() < cue_agreement)
    opener, closer = (ALARMIST, ALARMIST_END) if alarmist else (SOURCED, SOURCED_END)
    body = rng.choice(PHRASINGS).format(place=claim["place"], subject=claim["subject"], event=claim["event"])
    text = f"{rng.choice(opener)} {body[0].upper()}{body[1:]} {rng.choice(closer)}"
    return {"text": text, "label": LABELS[claim["label"]], "claim": claim["id"]}


def generate_mini_tweets(seed: int, n_claims: int, posts_per_claim: dict, cue_agreement: float) -> dict[str, list]:
    """{split: [{"text", "label", "claim"}]} for train / val / test: every claim has
    ``posts_per_claim[split]`` posts in each split, in a shuffled order fixed by ``seed``."""
    rng = random.Random(seed)
    claims = _claims(rng, n_claims)
    out = {}
    for split in ("train", "val", "test"):
        posts = [_post(rng, c, cue_agreement) for c in claims for _ in range(posts_per_claim[split])]
        rng.shuffle(posts)
        out[split] = posts
    return out
