"""Write chatbot/data/common_words.json, what `grounding.foreign` tells languages apart by: the
most frequent words of the languages other than English in Latin letters that wordfreq's small
lists cover, each with its Zipf frequency (English words are looked up in wordfreq's own list,
which the project loads anyway).

    python -m bench.languages

Common words are enough to tell languages apart, and the whole lists would not fit: nine small
lists took 34 MB in a serving process, twenty-seven 121 MB.
"""
from __future__ import annotations

import json

from wordfreq import available_languages, top_n_list, zipf_frequency

from chatbot.grounding import COMMON_WORDS_FILE, is_latin

TOP = 1000  # words per language


def main() -> None:
    table = {}
    for lang in sorted(set(available_languages("small")) - {"en"}):
        top = top_n_list(lang, TOP, wordlist="small")
        if sum(map(is_latin, "".join(top))) < 0.9 * len("".join(top)):
            continue  # another script is told apart by its letters
        table[lang] = {w: round(zipf_frequency(w, lang, wordlist="small"), 2) for w in top}
    COMMON_WORDS_FILE.write_text(json.dumps(table, ensure_ascii=False, sort_keys=True) + "\n",
                                 encoding="utf-8")
    print(f"{len(table)} languages, {TOP} words each -> {COMMON_WORDS_FILE}")


if __name__ == "__main__":
    main()
