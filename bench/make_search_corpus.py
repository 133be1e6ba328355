"""Synthetic markdown documents for bench/documents-search.sh, seeded so
every run makes the same bytes.

  make_search_corpus.py DIR [--documents 100] [--paragraphs 1000] [--seed 16]

Each document: a `# title`, then `## sections` of 10 paragraphs, each
paragraph 900-990 characters (one search passage at Keel's default
--document-passage-chars 1000, since passages are cut at paragraph breaks).
Words come from a seeded vocabulary of 20,000 made-up English-like words
drawn with a Zipf law (s = 1.0), plus a sprinkle of English function words,
so word frequencies look like real text. Planted on top, for the queries:

  rare word   "zeppelinoid"         in 1 passage of 10,000 (about 10 in 100,000)
  phrase      "quarterly revenue"   in 1 passage of 200 (about 500); each of
                                    the two words also alone in 1 of 50
  two words   vocabulary ranks 40 and 70 (whatever words those are): each
              in roughly a fifth of the passages, together in a few percent
  common word vocabulary rank 1 (not a stop word): in nearly every passage

Prints the query words as JSON on stdout (rare, common, two, phrase).
"""
import argparse
import bisect
import itertools
import json
import os
import random

ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "cr", "dr", "gr", "pl", "st", "tr", "sh", "ch", "th"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
CODAS = ["", "n", "r", "l", "s", "t", "m", "nd", "st", "rt"]
SUFFIXES = ["", "", "", "ion", "ment", "ity", "al", "er", "ous", "ive"]
FUNCTION = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "with", "on", "by", "this", "from", "at", "or"]


def vocabulary(rng, size):
    words, seen = [], set(FUNCTION) | {"zeppelinoid", "quarterly", "revenue"}
    while len(words) < size:
        syllables = rng.choice([1, 2, 2, 3, 3, 4])
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)) + rng.choice(SUFFIXES)
        if 3 <= len(word) <= 16 and word not in seen:
            seen.add(word)
            words.append(word)
    return words


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--paragraphs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    words = vocabulary(rng, 20000)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    total = cumulative[-1]

    def word():
        if rng.random() < 0.3:
            return rng.choice(FUNCTION)
        return words[bisect.bisect_left(cumulative, rng.random() * total)]

    def sentence():
        n = rng.randint(8, 18)
        return " ".join([word() for _ in range(n)]).capitalize() + "."

    def paragraph():
        target = rng.randint(900, 990)
        text = ""
        while True:
            s = sentence()
            if len(text) + 1 + len(s) > target and len(text) > 700:
                break
            text = (text + " " + s).strip()
        inserts = []
        if rng.random() < 1 / 10000:
            inserts.append("Zeppelinoid")
        if rng.random() < 1 / 200:
            inserts.append("Quarterly revenue")
        if rng.random() < 1 / 50:
            inserts.append("Quarterly")
        if rng.random() < 1 / 50:
            inserts.append("Revenue")
        for insert in inserts:
            sentences = text.split(". ")
            at = rng.randrange(len(sentences))
            sentences.insert(at, insert + " " + " ".join(word() for _ in range(6)))
            text = ". ".join(sentences)
        return text

    os.makedirs(args.dir, exist_ok=True)
    for d in range(args.documents):
        lines = [f"# Field report {d + 1}: {words[rng.randrange(200)]} {words[rng.randrange(2000)]}", ""]
        for p in range(args.paragraphs):
            if p % 10 == 0:
                lines += [f"## Section {p // 10 + 1}: {words[rng.randrange(500)]} {words[rng.randrange(5000)]}", ""]
            lines += [paragraph(), ""]
        with open(os.path.join(args.dir, f"report-{d + 1:03d}.md"), "w") as f:
            f.write("\n".join(lines))
    print(json.dumps({"rare": "zeppelinoid", "common": words[1], "two": f"{words[40]} {words[70]}", "phrase": '"quarterly revenue"'}))


if __name__ == "__main__":
    main()
