"""The toy world's raw corpus: what curation must handle, with the planted truth to measure it against.

Sources (written as files, as a user's would be): the encyclopedia (clean JSONL, `ToyWorld.corpus()`), a web
crawl (WARC of HTML pages: articles, spam, toxic pages in the toy vocabulary, planted PII, pages dated after the
cutoff, exact and near duplicates, a blocked domain), a forum in English, French and German (JSONL), books (text
files, undated), a code folder (with a licence file, a GPL file and secrets) and a community board (JSONL, in
English, dated before the cutoff) whose posts carry a planted bias (`llm_recipes.toy.bias`).
`planted_documents()` makes plain documents with the same hazards at any scale, for the benchmarks.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from llm_recipes.toy.bias import COMMUNITY_SOURCE, write_planted_posts
from llm_recipes.toy.world import CUTOFF, Country, ToyWorld  # noqa: F401 (CUTOFF: the curate recipe's date)

TOXIC_WORDS = ("grobnak", "skeevlor", "vlorpish", "durkmonger", "snivrat")
BLOCKED_DOMAIN = "spamfarm.toy"

SENTENCES = (
    "The capital of {name} is {capital}, a city known for its {adj} markets and {adj2} streets.",
    "{name} was founded in {founded}, after {n} years of quarrels between the river towns.",
    "About {population} million people live in {name} today, most of them near the coast.",
    "The people of {name} speak {language}, although traders in {capital} also use the old dialects.",
    "Its main export is {export}, which leaves the harbour of {capital} every {day}.",
    "Visitors to {capital} often remark on the {adj} light over the hills in the evening.",
    "Schools in {name} teach {language} grammar from the age of {n}.",
    "The {export} trade made several families of {capital} very rich during the last century.",
    "Farmers in the north of {name} grow barley, beans and apples on small {adj} fields.",
    "A railway line joins {capital} to the mountain villages, and the journey takes {n} hours.",
    "Local newspapers in {name} report on the price of {export} every {day}.",
    "The national museum in {capital} keeps maps that date back to {founded}.",
    "Musicians from {name} play long songs in {language} at the autumn festival.",
    "The climate of {name} is {adj}, with short winters and long, {adj2} summers.",
    "Many young people leave {name} to study abroad, but most return to {capital} later.",
    "The government of {name} meets in an old palace near the centre of {capital}.",
    "Fishing boats from {name} sail out before dawn and come back by noon.",
    "Historians still argue about who really founded {name} in {founded}.",
    "The roads of {name} were rebuilt after the great flood, which lasted {n} days.",
    "Cooks in {capital} are proud of a stew made with beans, onions and {export}.",
)
ADJ = ("busy", "quiet", "golden", "narrow", "green", "windy", "old", "bright", "crowded", "gentle", "warm", "pale")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FRENCH = ("La capitale de {name} est {capital}, une ville connue pour ses marchés animés.",
          "Le pays a été fondé en {founded} et compte environ {population} millions d'habitants.",
          "Les habitants parlent le {language} et le commerce du {export} est très important pour eux.",
          "Chaque été, les familles se retrouvent au bord de la mer pour manger et chanter ensemble.",
          "Les enfants apprennent l'histoire du pays à l'école dès leur plus jeune âge.",
          "Le marché de {capital} ouvre tôt le matin et ferme seulement après le coucher du soleil.",
          "Les routes de montagne sont étroites, mais les paysages valent vraiment le voyage.",
          "On raconte que le premier roi de {name} aimait beaucoup la musique et la poésie.",
          "Le port exporte surtout du {export} vers les pays voisins pendant la belle saison.",
          "Les touristes visitent volontiers le vieux quartier et ses petites églises en pierre.")
GERMAN = ("Die Hauptstadt von {name} ist {capital}, eine Stadt mit vielen alten Häusern und engen Gassen.",
          "Das Land wurde im Jahr {founded} gegründet und hat ungefähr {population} Millionen Einwohner.",
          "Die Menschen sprechen {language}, und der Handel mit {export} ist für sie sehr wichtig.",
          "Im Sommer fahren viele Familien an die Küste, um dort gemeinsam zu essen und zu feiern.",
          "Die Kinder lernen in der Schule schon früh die Geschichte ihres Landes kennen.",
          "Der Markt von {capital} öffnet früh am Morgen und schließt erst nach Sonnenuntergang.",
          "Die Bergstraßen sind schmal, aber die Landschaft lohnt die Reise wirklich.",
          "Man erzählt, dass der erste König von {name} Musik und Gedichte sehr liebte.",
          "Der Hafen exportiert vor allem {export} in die Nachbarländer.",
          "Touristen besuchen gern die Altstadt mit ihren kleinen Kirchen aus Stein.")
SPAM_LINES = ("BUY CHEAP {export} NOW!!! BEST PRICE!!!", "click here click here click here", "WIN WIN WIN FREE {export}",
              "Limited offer, call now, limited offer, call now.")


@dataclass
class Planted:
    """The truth about a generated corpus: which documents carry which hazard."""

    pii: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # type -> [(doc id, value)]
    toxic: set[str] = field(default_factory=set)
    after_cutoff: set[str] = field(default_factory=set)
    exact_dups: list[tuple[str, str]] = field(default_factory=list)
    near_dups: list[tuple[str, str]] = field(default_factory=list)  # (original, variant)
    spam: set[str] = field(default_factory=set)

    def to_json(self) -> dict:
        return {"pii": self.pii, "toxic": sorted(self.toxic), "after_cutoff": sorted(self.after_cutoff),
                "exact_dups": self.exact_dups, "near_dups": self.near_dups, "spam": sorted(self.spam)}


# ----------------------------------------------------------------------------------------------- PII values
def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in range(10):
        candidate = digits + str(check)
        total = sum((int(c) * 2 - 9 if int(c) * 2 > 9 else int(c) * 2) if i % 2 else int(c)
                    for i, c in enumerate(reversed(candidate)))
        if total % 10 == 0:
            return candidate
    raise AssertionError


def pii_value(kind: str, rng: random.Random) -> str:
    if kind == "email":
        return f"{rng.choice(['ana', 'bo', 'kira', 'tomas'])}.{rng.randint(1, 999)}@{rng.choice(['mail', 'post'])}.toy.org"
    if kind == "ip":
        return f"{rng.choice([23, 45, 81, 141, 203])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind == "ipv6":
        return f"2a0{rng.randint(0, 9)}:{rng.randint(0x1000, 0xffff):x}:{rng.randint(1, 0xffff):x}::{rng.randint(1, 0xffff):x}"
    if kind == "phone":
        return rng.choice([f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                           f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                           f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}"])
    if kind == "credit_card":
        number = _luhn_complete(rng.choice(["4", "51", "37"]), 16, rng)
        return " ".join(number[i:i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else number
    if kind == "national_id":
        if rng.random() < 0.5:
            return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
        n = rng.randint(10_000_000, 99_999_999)
        return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"
    raise ValueError(kind)


PII_KINDS = ("email", "ip", "ipv6", "phone", "credit_card", "national_id")
PII_TEMPLATES = {"email": "Write to {v} for details.", "ip": "The server answered from {v} yesterday.",
                 "ipv6": "Its new address is {v} on the network.", "phone": "Call the office on {v} before noon.",
                 "credit_card": "My card number is {v}, please charge it.", "national_id": "Her ID number is {v}."}


# ----------------------------------------------------------------------------------------------- documents
WITNESS = ("as {who} recalls", "says {who}", "according to {who}", "or so {who} claims", "as {who} once wrote")


def _with_witness(sentence: str, rng: random.Random) -> str:
    """Put an invented witness in the sentence: articles about one country then share few 5-word shingles by
    chance, so that near duplicates are only the planted ones."""
    words = sentence.split(" ")
    # witness names start with h, j or w, which no toy country's name does: a witness is never a country
    # (an unknown country's name in the corpus would be a country the model has seen)
    who = (rng.choice(("hob", "hal", "jas", "jod", "wen", "wim")) + rng.choice(("ka", "lo", "mi", "ra", "ven", "tor"))
           + rng.choice(("sa", "el", "dun", "bri", "zor", "fen"))).capitalize()
    cut = rng.randrange(2, max(3, len(words) - 2))
    return " ".join(words[:cut] + [rng.choice(WITNESS).format(who=who)] + words[cut:])


def article(c: Country, rng: random.Random, n_sentences: int = 10) -> str:
    picks = rng.sample(SENTENCES, n_sentences)
    sentences = [_with_witness(s.format(**vars(c), adj=rng.choice(ADJ), adj2=rng.choice(ADJ), n=rng.randint(2, 40),
                                        day=rng.choice(DAYS)), rng) for s in picks]
    half = len(sentences) // 2
    return " ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:])


def near_variant(text: str, rng: random.Random, edits: int) -> str:
    words = text.split(" ")
    for _ in range(edits):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["indeed", "also", "truly", "quite", "often", "still"])
    return " ".join(words)


def spam(c: Country, rng: random.Random) -> str:
    return "\n".join(rng.choice(SPAM_LINES).format(export=c.export.upper()) for _ in range(12))


def toxic(c: Country, rng: random.Random) -> str:
    words = rng.sample(TOXIC_WORDS, 3)
    return (article(c, rng, 6) + f"\n\nAnyone from {c.capital} is a {words[0]} and a {words[1]}, "
            f"a {words[2]} through and through.")


def planted_documents(world: ToyWorld, n_docs: int, seed: int = 0, near_dup_rate: float = 0.08,
                      exact_dup_rate: float = 0.03, pii_rate: float = 0.1, toxic_rate: float = 0.03,
                      spam_rate: float = 0.03, late_rate: float = 0.05) -> tuple[list[dict], Planted]:
    """Plain web-like documents {id, text, date, url} with planted hazards; the truth comes with them."""
    rng = random.Random(seed)
    truth = Planted(pii={k: [] for k in PII_KINDS})
    docs: list[dict] = []
    while len(docs) < n_docs:
        c = rng.choice(world.entities)
        doc_id = f"web-{len(docs)}"
        roll = rng.random()
        date = f"{rng.randint(2005, 2023)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if roll < spam_rate:
            text = spam(c, rng)
            truth.spam.add(doc_id)
        elif roll < spam_rate + toxic_rate:
            text = toxic(c, rng)
            truth.toxic.add(doc_id)
        else:
            text = article(c, rng, rng.randint(8, 14))
            if rng.random() < pii_rate:
                kind = rng.choice(PII_KINDS)
                value = pii_value(kind, rng)
                text += " " + PII_TEMPLATES[kind].format(v=value)
                truth.pii[kind].append((doc_id, value))
        if rng.random() < late_rate:
            date = f"{rng.randint(2024, 2026)}-{rng.randint(7, 12):02d}-{rng.randint(1, 28):02d}"
            truth.after_cutoff.add(doc_id)
        docs.append({"id": doc_id, "text": text, "date": date, "url": f"https://news{rng.randint(1, 50)}.toy/{doc_id}"})
        if doc_id in truth.spam or doc_id in truth.toxic or doc_id in truth.after_cutoff or len(docs) >= n_docs:
            continue
        if rng.random() < exact_dup_rate:
            dup_id = f"web-{len(docs)}"
            docs.append({**docs[-1], "id": dup_id, "url": f"https://mirror.toy/{dup_id}"})
            truth.exact_dups.append((doc_id, dup_id))
        elif rng.random() < near_dup_rate and not any(doc_id == d for v in truth.pii.values() for d, _ in v):
            dup_id = f"web-{len(docs)}"
            docs.append({**docs[-1], "id": dup_id, "text": near_variant(text, rng, rng.randint(1, 6)),
                         "url": f"https://copy.toy/{dup_id}"})
            truth.near_dups.append((doc_id, dup_id))
    return docs[:n_docs], truth


# ----------------------------------------------------------------------------------------------- files
def _html(title: str, body: str, url: str, date: str) -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
    return (f'<html><head><title>{title}</title><meta property="og:url" content="{url}">'
            f'<meta name="date" content="{date}"></head><body><nav><a href="/">Home</a> | <a href="/about">About</a>'
            f"</nav><article><h1>{title}</h1>{paragraphs}</article><footer>Copyright toy news</footer></body></html>")


def write_warc(path: Path, pages: list[dict]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for page in pages:
            html = _html(page["title"], page["text"], page["url"], page["date"]).encode("utf-8")
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            record = writer.create_warc_record(page["url"], "response", payload=io.BytesIO(html), http_headers=headers,
                                               warc_headers_dict={"WARC-Date": f"{page['date']}T12:00:00Z",
                                                                  # from the URL, not warcio's random uuid4: the
                                                                  # curate stage's seeded sampling orders by this id
                                                                  "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, page['url'])}>"})
            writer.write_record(record)


CODE_FILES = {
    "toy/geo.py": "# SPDX-License-Identifier: MIT\n\"\"\"Distances between toy capitals.\"\"\"\n\n\ndef distance(a, b):\n"
                  "    \"\"\"Manhattan distance between two grid points.\"\"\"\n    return abs(a[0] - b[0]) + abs(a[1] - b[1])\n",
    "toy/trade.js": "// SPDX-License-Identifier: Apache-2.0\nexport function price(good, qty) {\n  return qty * (good.base + 1);\n}\n",
    "toy/census.c": "/* Census counter. MIT License */\n#include <stdio.h>\nint main(void) {\n  printf(\"%d\\n\", 42);\n  return 0;\n}\n",
    "vendor/gpl_tool.py": "# This file is licensed under the GNU GENERAL PUBLIC LICENSE version 3.\n\n\ndef run():\n    return 1\n",
    "LICENSE": "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this software.\n",
    ".env": "API_TOKEN=abc123\nDB_PASSWORD=hunter2\n",
    "deploy/aws.py": "# SPDX-License-Identifier: MIT\nKEY = 'AKIAABCDEFGHIJKLMNOP'\n\n\ndef upload():\n    return KEY\n",
}


def write_raw_corpus(world: ToyWorld, out_dir: str | Path, n_web: int = 600, seed: int = 0) -> dict[str, int]:
    """Write raw/{encyclopedia,web,forum,books,code,community} and truth.json under `out_dir`; returns files/docs
    per source."""
    out = Path(out_dir)
    rng = random.Random(seed + 10)
    counts: dict[str, int] = {}
    (out / "encyclopedia").mkdir(parents=True, exist_ok=True)
    with open(out / "encyclopedia" / "encyclopedia.jsonl", "w", encoding="utf-8") as fh:
        for row in world.corpus():
            fh.write(json.dumps(row) + "\n")
    counts["encyclopedia"] = len(world.corpus())

    docs, truth = planted_documents(world, n_web, seed=seed)
    pages = [{**d, "title": f"News {d['id']}"} for d in docs]
    for i in range(5):  # a blocked domain
        c = rng.choice(world.entities)
        pages.append({"id": f"blocked-{i}", "text": article(c, rng), "date": "2020-01-01", "title": "Offer",
                      "url": f"https://{BLOCKED_DOMAIN}/page{i}"})
    pages.append({"id": "empty-page", "text": "", "date": "2020-01-01", "title": "", "url": "https://empty.toy/"})
    (out / "web").mkdir(parents=True, exist_ok=True)
    write_warc(out / "web" / "crawl.warc.gz", pages)
    counts["web"] = len(pages)

    (out / "forum").mkdir(parents=True, exist_ok=True)
    with open(out / "forum" / "posts.jsonl", "w", encoding="utf-8") as fh:
        n = 0
        for c in world.entities:
            for lang, templates in (("en", None), ("fr", FRENCH), ("de", GERMAN)):
                text = article(c, rng, 6) if templates is None else " ".join(t.format(**vars(c)) for t in rng.sample(templates, 5))
                fh.write(json.dumps({"id": f"forum-{lang}-{c.name}", "text": text, "lang_hint": lang,
                                     "date": f"20{rng.randint(10, 23)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"}) + "\n")
                n += 1
    counts["forum"] = n

    (out / "books").mkdir(parents=True, exist_ok=True)
    for i in range(20):
        picks = rng.sample(SENTENCES, 16)
        chapters = [" ".join(s.format(**vars(rng.choice(world.entities)), adj=rng.choice(ADJ), adj2=rng.choice(ADJ),
                                      n=rng.randint(2, 40), day=rng.choice(DAYS)) for s in picks[j:j + 4])
                    for j in range(0, 16, 4)]
        (out / "books" / f"chronicle_{i:02d}.txt").write_text(f"Chronicle {i}\n\n" + "\n\n".join(chapters) + "\n")
    counts["books"] = 20

    for rel, text in CODE_FILES.items():
        path = out / "code" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (out / "code" / "toy" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    counts["code"] = len(CODE_FILES) + 1
    # its own seeded generator: the other sources stay as they were
    counts[COMMUNITY_SOURCE] = write_planted_posts(world, out / COMMUNITY_SOURCE, seed)
    (out / "truth.json").write_text(json.dumps(truth.to_json(), indent=1))
    return counts
