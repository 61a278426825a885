#!/usr/bin/python3
"""stress_text.py — writes the stress inputs of tests/test_tiktoken.sh: text that is hard to
pre-tokenize and to merge, and bytes that are not UTF-8 at all.

    /usr/bin/python3 tests/stress_text.py OUTDIR [--long]

Writes, deterministically (the same bytes on every run and machine):

    OUTDIR/valid/*.txt     valid UTF-8 only: the files of the decode(encode(x)) == x check
    OUTDIR/invalid/*.bin   invalid UTF-8 of every kind, random bytes
    OUTDIR/concat_all.bin  the files above joined, > 1 MiB, so that --threads 2 really cuts it
                           (alloy encodes inputs under 1 MiB on one thread); without
                           distinct_pieces.txt and the files of long merging runs (QUADRATIC),
                           which would only make js-tiktoken slow
    OUTDIR/long/*.txt      with --long only: runs of 100,000 digits, newlines and letters

About 3.7 MB of files (1.5 MB of them distinct_pieces.txt), plus the 2.1 MB concat_all.bin.

Unicode version. Run it with Debian's /usr/bin/python3 (3.11), whose unicodedata is Unicode
14.0 — the version of Debian's PCRE2 10.42, whose \\p{L} and \\p{N} alloy's pre-tokenizer uses.
Code points are sampled only among those assigned in Unicode 14 (plus unassigned ones that stay
unassigned through Unicode 17), so the comparison does not depend on which newer Unicode the
oracle's JavaScript engine has (Node 20 with ICU 78 has Unicode 17: its \\p{L} also holds some
13,900 code points that are unassigned in 14, e.g. U+088F, U+A7CB; those would differ).

Why the long runs are short by default: js-tiktoken's merge loop rescans the whole piece after
every merge, O(n^2) in the length of a piece. A run of spaces, tabs or \\r\\n has no merges in
GPT-2 (its only whitespace merge is "\\n\\n"), so 200,000 of them cost nothing; but 16,000 digits
take js-tiktoken 11 s and 64,000 newlines 210 s. So runs that merge are a few thousand long
here, and the 100,000-long ones are behind --long (tests/test_tiktoken.sh: ALLOY_TEST_SLOW=1).
A piece of more than ~120,000 tokens (200,000 spaces) also overflows the stack in js-tiktoken's
ret.push(...tokens) unless node runs with --stack-size=4000, as the test does.
"""
import os
import random
import sys
import unicodedata

assert unicodedata.unidata_version == "14.0.0", (
    "run with Debian's /usr/bin/python3 (unicodedata 14.0.0, the Unicode of PCRE2 10.42); this one has "
    + unicodedata.unidata_version
)

# ---- helpers ------------------------------------------------------------------------------

CATEGORIES = [
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi",
    "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn",
]

# Unassigned in Unicode 14 and still in 17: noncharacters, holes in the Greek block, planes 4-13
# and plane 14's first code point. (Other Cn of 14 may be letters to a newer JavaScript.)
STABLE_UNASSIGNED = (
    [0x0378, 0x0379, 0x0380, 0x0381, 0x0382, 0x0383, 0x038B, 0x038D, 0x03A2, 0xE0000]
    + list(range(0xFDD0, 0xFDF0))
    + [p * 0x10000 + 0xFFFE for p in range(17)] + [p * 0x10000 + 0xFFFF for p in range(17)]
)

# Every kind of space: JavaScript's \s (what js-tiktoken's pattern means by \s), and the
# look-alikes that are not \s in JavaScript (U+0085, U+180E, U+200B, U+2060) or are \s in
# JavaScript but not in PCRE2 (U+FEFF).
SPACES = (
    ["\t", "\n", "\x0b", "\x0c", "\r", " ", "\u00a0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"]
)
NOT_JS_SPACES = ["\u0085", "\u180e", "\u200b", "\u200c", "\u200d", "\u2060", "\x1c", "\x1d", "\x1e", "\x1f"]


def by_category():
    """{category: [code points assigned in Unicode 14]}, Cs and Cn by hand."""
    cats = {c: [] for c in CATEGORIES}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        g = unicodedata.category(chr(cp))
        if g != "Cn":
            cats[g].append(cp)
    cats["Cs"] = list(range(0xD800, 0xE000))
    cats["Cn"] = STABLE_UNASSIGNED
    return cats


def sample(rnd, cps, k):
    """k code points spread over cps: evenly spaced, plus the first and the last few."""
    if len(cps) <= k:
        return list(cps)
    step = len(cps) / k
    picked = {cps[int(i * step + rnd.random() * step)] for i in range(k)}
    picked.update(cps[:8] + cps[-8:])
    return sorted(picked)


def pick(rnd, seq):
    return seq[int(rnd.random() * len(seq))]


def randint(rnd, lo, hi):
    """lo..hi inclusive; by rnd.random() only, which is the same in every Python 3."""
    return lo + int(rnd.random() * (hi - lo + 1))


def write(path, data):
    if isinstance(data, str):
        data = data.encode("utf-8")  # fails on a lone surrogate: valid files stay valid
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return data


# ---- valid UTF-8 ---------------------------------------------------------------------------

CONTEXTS = [
    "{c}", " {c}", "a{c}b", "1{c}2", "{c}'s", "'{c}", "{c}{c}", "\t{c}\n", ".{c}.", "Z{c}9", "{c} ",
    "\u00e9{c}\u4e2d", "{c}\u0301", " {c}{c} ", "<{c}>", "{c}\u3000x", "\n\n{c}", "{c}123",
]


def unicode_categories(rnd, cats):
    out = []
    for g in CATEGORIES:
        if g == "Cs":
            continue  # not encodable as valid UTF-8: see invalid_utf8.bin
        cps = sample(rnd, cats[g], 1200)
        chars = [chr(c) for c in cps]
        out.append("\n== %s (%d of %d) ==\n" % (g, len(cps), len(cats[g])))
        for i in range(0, len(chars), 40):  # one by one, space separated
            out.append(" ".join(chars[i:i + 40]) + "\n")
        for i in range(0, len(chars), 3):  # short runs of the category
            out.append("".join(chars[i:i + 3]) + (" " if i % 60 else "\n"))
        out.append("\n")
        for i, c in enumerate(chars[:400]):  # in ASCII and other contexts
            out.append(CONTEXTS[i % len(CONTEXTS)].format(c=c))
        out.append("\n")
    return "".join(out)


def combining_marks(rnd, cats):
    marks = [chr(c) for c in sample(rnd, cats["Mn"] + cats["Mc"] + cats["Me"], 600)]
    bases = ["a", "e", "Z", "1", " ", ".", "'", "\u4e2d", "\u0915", "\u05d0", "\u0627", "\U0001F600", "\n", "\t", "_", "\u00a0"]
    out = ["Caf\u00e9 cafe\u0301 CAFE\u0301 na\u0308ive\u0308 n\u0303 \u1e9b\u0323 \u0041\u030a\u212b \u00c5\n"]
    out.append("Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da\u0300\u0301lgo\n")
    for i, m in enumerate(marks):  # a mark after every kind of base, then sequences of 1-5
        out.append(bases[i % len(bases)] + m)
        if i % 7 == 0:
            out.append(" ")
    out.append("\n")
    for i in range(1500):
        seq = "".join(pick(rnd, marks) for _ in range(randint(rnd, 1, 5)))
        out.append(pick(rnd, bases) + seq + pick(rnd, ["", " ", "x", "1", "'s", "\n", ".", seq]))
    out.append("\n")
    # marks where nothing can carry them: at the start of a line, after spaces, runs of marks
    out.append("\u0301\u0301\u0301 \u0301 \u0301\n\u0301x\n" + "".join(marks[:80]) + "\n")
    # Devanagari conjuncts and vowel signs, Hangul conjoining jamo, Thai tone marks, Arabic harakat
    out.append("\u0915\u094d\u0937 \u0924\u094d\u0930 \u091c\u094d\u091e \u0936\u094d\u0930\u0940 \u0915\u093f \u0915\u0940 \u0915\u0941\u0902\n")
    out.append("\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af \u1100\u1161\u1100\u1161\n")
    out.append("\u0e01\u0e48\u0e49\u0e4a \u0e19\u0e49\u0e33 \u0e17\u0e35\u0e48\u0e19\u0e35\u0e48\n")
    out.append("\u0628\u0650\u0633\u0652\u0645\u0650 \u0627\u0644\u0644\u0651\u064e\u0647\u0650 \u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f\n")
    # NFC against NFD of the same words
    words = ["r\u00e9sum\u00e9", "\u00fcber", "\u00c5ngstr\u00f6m", "ti\u1ebfng Vi\u1ec7t", "\u1f08\u03b8\u1fc6\u03bd\u03b1\u03b9", "\uac00\ud55c"]
    for w in words:
        out.append(" ".join(unicodedata.normalize(f, w) for f in ("NFC", "NFD", "NFKC", "NFKD")) + "\n")
    return "".join(out)


def spaces_text(rnd):
    out = []
    allsp = SPACES + NOT_JS_SPACES
    for s in allsp:  # each alone, doubled, before and after every class of character
        for ctx in ("a{s}b", "{s}", "{s}{s}", "a{s}{s}b", "1{s}2", ".{s}.", "{s}x", "x{s}", "{s}{s}{s}x",
                    "'{s}s", "{s}'s", "\u4e2d{s}\u6587", "x {s} y", "x{s} y", "x {s}y", "{s}\n", "\n{s}",
                    "{s}\u0301", "{s}1", "\U0001F600{s}"):
            out.append(ctx.format(s=s))
        out.append("|\n")
    for a in allsp:  # every pair, between letters
        for b in allsp:
            out.append("w" + a + b + "w")
        out.append("\n")
    for i in range(3000):  # random runs of mixed spaces between words, digits and punctuation
        run = "".join(pick(rnd, allsp) for _ in range(randint(rnd, 1, 6)))
        out.append(pick(rnd, ["word", "7", "!", "\u00e9t\u00e9", "", "'s", "\u0627\u0644"]) + run)
    out.append("\n")
    for s in allsp:  # runs of 1..40 of each, then a letter
        for k in (1, 2, 3, 5, 8, 13, 40):
            out.append(s * k + "z")
        out.append("\n")
    return "".join(out) + " \u3000\u00a0 "  # ends in spaces: no \S after the last run


EMOJI = [
    "\U0001F600", "\U0001F602", "\u2764\ufe0f", "\u2764", "\U0001F44D", "\U0001F44D\U0001F3FB", "\U0001F44D\U0001F3FF",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F469\u200d\U0001F4BB", "\U0001F9D1\U0001F3FD\u200d\U0001F692",
    "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F3F4\u200d\u2620\ufe0f", "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5",
    "\U0001F1E9\U0001F1EA", "\U0001F1FA\U0001F1F8\U0001F1EC\U0001F1E7", "\U0001F1E6",
    "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F", "1\ufe0f\u20e3", "#\ufe0f\u20e3", "*\u20e3",
    "\u263a\ufe0e", "\u263a\ufe0f", "\U0001F926\U0001F3FC\u200d\u2642\ufe0f", "\U0001F469\u200d\u2764\ufe0f\u200d\U0001F48B\u200d\U0001F468",
    "\U0001FAE0", "\U0001F9CC", "\U0001F97A", "\u2b50", "\u00a9\ufe0f", "\u2122", "\U0001F004", "\U0001F0CF",
]


def emoji_text(rnd, cats):
    out = [" ".join(EMOJI) + "\n", "".join(EMOJI) + "\n"]
    for e in EMOJI:
        out.append("hi" + e + "there " + e + e + " 1" + e + "2 '" + e + "'s " + e + "\n")
    so = [chr(c) for c in cats["So"] if c >= 0x1F000]
    for i in range(2000):  # random emoji with random modifiers and joins
        e = pick(rnd, so)
        if rnd.random() < 0.3:
            e += chr(0x1F3FB + randint(rnd, 0, 4))
        if rnd.random() < 0.3:
            e += "\u200d" + pick(rnd, so)
        if rnd.random() < 0.2:
            e += "\ufe0f"
        out.append(e + pick(rnd, ["", " ", "", "a", "\n", "!"]))
    return "".join(out)


SCRIPTS = [
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6211\u4eec\u4eca\u5929\u53bb\u5317\u4eac\u3002\u4e2d\u6587\u6ca1\u6709\u7a7a\u683c\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57\u3002\uff8a\uff9d\uff76\uff78\uff76\uff85",
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4! \ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0661\u0662\u0663 \u06f4\u06f5\u06f6 \u200f\u061f",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd! \u05e2\u05b4\u05d1\u05b0\u05e8\u05b4\u05d9\u05ea \u05f3\u05f4 \u200e",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e! \u0939\u093f\u0928\u094d\u0926\u0940 \u0967\u0968\u0969 \u0964",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07 \u0e51\u0e52\u0e53",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5; \u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0535\u0580\u0587\u0561\u0576 \u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u12a0\u121b\u122d\u129b \u1363 \u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd \u0986\u09ae\u09bf \u0f56\u0f7c\u0f51\u0f0b\u0f61\u0f72\u0f42 \u1781\u17d2\u1798\u17c2\u179a \u1019\u103c\u1014\u103a\u1019\u102c",
    "\u182e\u1823\u1829\u182d\u1823\u182f\u180e\u1821 \U0001D400\U0001D401\U0001D7CE\U0001D7CF \uff21\uff22\uff23\uff10\uff11 \u216b\u2160 \u00b2\u00b3\u00bd\u2460",
]


def scripts_text(rnd):
    out = []
    for s in SCRIPTS:
        out.append(s + "\n" + s.replace(" ", "") + "\n")
    ranges = [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x0621, 0x064A), (0x05D0, 0x05EA),
              (0x0905, 0x0939), (0x0E01, 0x0E2E), (0x0391, 0x03C9), (0x0410, 0x044F), (0x20000, 0x2A6DF)]
    for lo, hi in ranges:  # random words of each script
        for i in range(400):
            w = "".join(chr(randint(rnd, lo, hi)) for _ in range(randint(rnd, 1, 8)))
            out.append(w if unicodedata.category(w[0])[0] == "L" else "x")
            out.append(pick(rnd, [" ", " ", "\n", ", ", "\u3002", "\u060c ", ""]))
        out.append("\n")
    return "".join(out)


def mixed_scripts(rnd):
    out = ["abc\u0430\u0431\u0432\u03b1\u03b2\u03b3\u4e2d\u6587abc123\u0661\u0662\u0663\u0967\u0968xyz\n",
           "Hello\u4e16\u754c \u041c\u0438\u0440world \u0645\u0631\u062d\u0628\u0627hello \u05e9\u05dc\u05d5\u05ddabc\n",
           "https://example.com/\u043f\u0443\u0442\u044c?q=\u4e2d\u6587&x=1#\u00e9 user.n\u00e4me+tag@ex\u00e4mple.org\n",
           "def \u03c6(\u03b1, \u03b2): return \u03b1\u00b2 + \u03b2\u00b2  # \u043a\u043e\u043c\u043c\u0435\u043d\u0442\u0430\u0440\u0438\u0439\n",
           "camelCase snake_case SCREAMING_CASE kebab-case 0xDEADbeef 1e-9 3.14159 1,000,000 v2.0.1-rc1\n",
           "x\u00b2+y\u00b3=z\u2074 \u00bd\u00bc H\u2082O 10\u00b0C \u2160\u2161\u2162 \u2460\u2461 \U0001D7D8\U0001D7D9 \uff11\uff12\uff13\n"]
    pools = ["abcXYZ", "\u0430\u0431\u0432\u0413\u0414", "\u03b1\u03b2\u0393\u0394", "\u4e2d\u6587\u5b57", "\u3042\u30a2",
             "\u0627\u0644\u0639", "\u05d0\u05d1", "\u0915\u093e\u0916", "\u0e01\u0e32", "0123456789",
             "\u0660\u0661\u0662", "\u0966\u0967", "\uff10\uff11", "\u00b2\u00bd\u2460", "\u2160\u2161",
             "'", "\u2019", "-_.,!?", "\u00e9\u00f1\u00fc", "\u0301\u0308", "\U0001F600\U0001F44D", " ", "\u00a0", "\n", "\t"]
    for i in range(6000):  # random mixtures, a few characters from each pool at a time
        p = pick(rnd, pools)
        out.append("".join(pick(rnd, p) for _ in range(randint(rnd, 1, 4))))
    return "".join(out)


def whitespace_runs(rnd):
    """{name: text}: long whitespace runs. Only "\\n\\n" merges in GPT-2, so all but the newline
    runs cost js-tiktoken linear time."""
    ascii_ws = " \t\r\x0b\x0c"
    mixed = []
    for i in range(200000):  # spaces, tabs, \r, \v, \f and single \n, never two \n in a row
        c = pick(rnd, ascii_ws) if rnd.random() < 0.97 or (mixed and mixed[-1] == "\n") else "\n"
        mixed.append(c)
    uni = []
    for s in SPACES:  # a run of each Unicode space: multi-byte ones merge, so 150 each
        uni.append("x" + s * 150 + "y" + s * 150 + "\n")
    uni.append("".join(pick(rnd, SPACES) for _ in range(800)) + "end\n")
    return {
        "ws_spaces_200k.txt": "start" + " " * 200000 + "x" + " " * 1000,
        "ws_tabs_100k.txt": "\t" * 100000 + "x\t\t\n",
        "ws_mixed_200k.txt": "a" + "".join(mixed) + "b" + "".join(mixed[:5000]),
        "ws_crlf_100k.txt": "line\r\n" + "\r\n" * 50000 + "x" + "\r" * 20000 + "y" + "\n\r" * 10000,
        "ws_newline_space_100k.txt": "a" + "\n " * 50000 + "b" + " \n" * 10000,
        "ws_newlines_4k.txt": "para" + "\n" * 4000 + "next" + "\n" * 1001 + "x" + "\n\n\n" + " \n\n \n" * 300,
        "ws_unicode_spaces.txt": "".join(uni),
    }


def digits_text(rnd):
    out = []
    for k in range(1, 65):  # every length to 64, alone and after a space, a letter, a sign
        d = "".join(str(randint(rnd, 0, 9)) for _ in range(k))
        out.append(d + " " + d + " x" + d + " -" + d + " " + "9" * k + "\n")
    out.append("7" * 2000 + "\n" + "".join(str(randint(rnd, 0, 9)) for _ in range(1500)) + "\n")
    out.append("0" * 1000 + " " + "1234567890" * 100 + "\n")
    out.append("1,000,000.00 3.14159 1e10 2^64=18446744073709551616 +1-555-0100 2024-01-01T12:00:00Z 0x1F 0b1010 1_000\n")
    for lo in (0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0xFF10, 0x1D7CE, 0x1D7D8, 0x104A0):  # other decimal digits
        ds = "".join(chr(lo + (i % 10)) for i in range(30))
        out.append(ds + " " + ds[:5] + "abc" + ds[:3] + " 12" + ds[:4] + "\n")
    out.append("\u00b2\u00b3\u00b9\u00bc\u00bd\u00be\u2070\u2074\u2080\u2150\u2460\u2473\u3251\U0001F100 \u2160\u2169\u216b\u3007\U00010140\n")
    out.append("".join(pick(rnd, "0123456789\u0660\u0661\u0966\uff10\u00b2\u00bd\u2160") for _ in range(2000)) + "\n")
    return "".join(out)


def letters_text(rnd):
    out = ["a" * 2000 + "\n", "".join(pick(rnd, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2000)) + "\n",
           "\u00e9" * 800 + "\n", "\u4e2d" * 500 + "\n", "ab" * 800 + "\n", " " + "the" * 500 + "\n",
           "".join(pick(rnd, "\u00e9\u00e8\u00ea\u00eb\u0430\u0431\u03b1\u03b2") for _ in range(800)) + "\n"]
    for k in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377):  # around the 48 / 128-byte limits of the cache
        out.append(" " + "".join(pick(rnd, "etaoinshrdlu") for _ in range(k)) + " x" + "z" * k + "\n")
    return "".join(out)


def contractions():
    out = []
    sufs = ["s", "t", "re", "ve", "m", "ll", "d"]
    cased = []
    for s in sufs:  # every case of every suffix: 's 'S 'll 'lL 'Ll 'LL ...
        for mask in range(1 << len(s)):
            cased.append("".join(ch.upper() if mask >> i & 1 else ch for i, ch in enumerate(s)))
    apos = ["'", "\u2019", "\u2018", "\u02bc", "\u201b", "\uff07", "`", "\u00b4", "''"]
    for a in apos:
        for s in cased:
            for ctx in ("it{a}{s}", "{a}{s}", " {a}{s}", "{a}{s}x", "1{a}{s}", "\n{a}{s}", ".{a}{s} ", "{a}{a}{s}",
                        "{a}{s}{a}{s}", "X{a}{s}{a}", "\u00e9{a}{s}", " {a} {s}"):
                out.append(ctx.format(a=a, s=s))
            out.append(" ")
        out.append("\n")
    out.append("don't DON'T Don'T can't won't I'm I'M you're YOU'RE we've WE'VE he'll HE'LL she'd SHE'D it's IT'S\n")
    out.append("y'all'd've rock'n'roll O'Neil 'tis 'twas '90s ain\u2019t I\u2019ll we\u2019re 'hello' \"it's\" ''s '''ll\n")
    out.append("'s's's's 'll'll'll 'S'S 'LL'LL 're're 'r'e 'l'l 'ss 'tt 'lls 'ree 'vee 'mm 'dd\n'")
    return "".join(out)


def crlf_text(rnd):
    out = ["line one\r\nline two\r\n\r\nlone cr\rmiddle\rend\n\rreversed\n\r\r\r\n\r\n\n\r\r\n",
           "trailing space \r\ntrailing tab\t\r\n \r\n\t\r\n\r \n\r\t\n  \r\n  \r\n\r\n\r\n"]
    for i in range(3000):
        out.append(pick(rnd, ["word", "Word", "x", "12", "'s", " ", "\t", "\u00e9", ""]) + pick(rnd, ["\r\n", "\r", "\n", "\r\r\n", "\n\r", " \r\n", "\r\n\r\n"]))
    return "".join(out) + "end\r"


def controls_text(rnd):
    out = []
    ctrls = [chr(c) for c in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0))]
    for c in ctrls:
        for ctx in ("a{c}b", "{c}", "{c}{c}{c}", " {c}", "{c} ", "1{c}2", "'{c}s", ".{c}.", "\n{c}\n", "x {c} y"):
            out.append(ctx.format(c=c))
        out.append("|")
    out.append("\n\x00\x00\x00\x00NUL run\x00 \x00x\x00\x01\x02\x03\x1b[31mred\x1b[0m\x07\x08\x7f\n")
    for i in range(3000):
        out.append(pick(rnd, ctrls) + pick(rnd, ["", "a", " ", "1", "\u00e9", ".", "\n"]))
    return "".join(out)


def endoftext_text():
    e = "<|endoftext|>"
    return "".join([
        e, "Hello", e, e, " world ", e, "\n", e, "\n\n", e, " ", e, "  ", e, "\t", e, "x",
        "abc", e, "def 123", e, "456 '", e, "s ", e, "'s\n",
        "<|endoftext|", " <|endoftext", " |endoftext|> ", "<|endoftext|>>", "<<|endoftext|>", "<|endo", e, "ftext|>",
        "<|ENDOFTEXT|> <|endoftext |> < |endoftext|> <|end\u200boftext|> <|im_start|>user<|im_end|> <|fim_prefix|>\n",
        "\u4e2d", e, "\u6587 \U0001F600", e, "\U0001F600 \u00a0", e, "\u3000", e, "\u3000",
        "Story one ends here.", e, "Story two begins.\n", e * 5, "\n", (e + " ") * 3, " ", e])


def punctuation_text(rnd):
    out = []
    punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    for a in punct:  # every ordered pair, and every triple with the same middle
        out.append(" ".join(a + b for b in punct) + "\n")
        out.append("".join(a + b + a for b in punct) + "\n")
    for p in punct + "\u2026\u2014\u2013\u00b7\u2022\u00bf\u00a1\u3001\u3002\uff01":
        for k in (2, 3, 4, 8, 16, 64):
            out.append(p * k + " ")
        out.append("\n")
    out.append("!" * 1500 + "\n" + "." * 1000 + "\n" + "-" * 1500 + "\n" + "=" * 1000 + "\n")
    out.append("\u00ab\u00bb\u201e\u201c\u201d\u2018\u2019\u2039\u203a\u2014\u2013\u2026\u00b7\u2022\u00a7\u00b6\u2020\u2021\u2030\u2032\u2033\u203c\u2047\u2048\u2049\n")
    out.append("-> => :: != <= >= == === !== && || ?? ?. ... ;; {} [] () <> </> <!-- --> /* */ // # ## ### ``` ~~~ **bold** __u__\n")
    for i in range(4000):
        out.append("".join(pick(rnd, punct + "\u2026\u201c\u201d\u00bf") for _ in range(randint(rnd, 1, 6))) + pick(rnd, ["", " ", "a", "1", "\n"]))
    return "".join(out)


def random_unicode(rnd, cats):
    pool = [c for g in CATEGORIES if g not in ("Cs", "Cn") for c in cats[g]] + STABLE_UNASSIGNED
    seps = SPACES + NOT_JS_SPACES + ["", "", "", "'s", "'", "\u2019", ".", ",", "\r\n", "-"]
    out = []
    for i in range(40000):  # words of 1-6 random assigned code points
        out.append("".join(chr(pick(rnd, pool)) for _ in range(randint(rnd, 1, 6))))
        out.append(pick(rnd, seps))
    return "".join(out)


def distinct_pieces(rnd):
    """300,000 different words, so that the encoder's piece cache (262,144 pieces) fills up and
    is emptied mid-text; lines of 16 words (cuts for --threads)."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for i in range(300000):
        k = 2704 + 13 * i  # distinct words of 3-4 letters: base-52 digits of distinct numbers
        w = ""
        while k:
            w += letters[k % 52]
            k //= 52
        out.append(w + ("\n" if i % 16 == 15 else " "))
    return "".join(out)


def bom_text():
    return "\ufeffA file that starts with a byte order mark.\n\ufeffAnd one\ufeffinside\ufeff\ufeff words \ufeff.\n\ufeff"


# Files whose long merging runs cost js-tiktoken O(n^2) time: kept out of concat_all.bin.
QUADRATIC = {"digits.txt", "letters.txt", "ws_newlines_4k.txt", "ws_unicode_spaces.txt", "punctuation.txt"}

EDGES = {
    "edge_empty.txt": "",
    "edge_space.txt": " ",
    "edge_newline.txt": "\n",
    "edge_endoftext_only.txt": "<|endoftext|>",
    "edge_apostrophe.txt": "'",
    "edge_apostrophe_s.txt": "'s",
    "edge_crlf.txt": "\r\n",
    "edge_nul.txt": "\x00",
    "edge_replacement_char.txt": "\ufffd\ufffd \ufffd",
}


# ---- invalid UTF-8 -------------------------------------------------------------------------

def invalid_utf8(rnd):
    b = bytearray()
    b += b"== lone continuation bytes ==\n"
    for c in range(0x80, 0xC0):
        b += b"a" + bytes([c]) + b"b " + bytes([c, c]) + b" " + bytes([c]) + b"1\n"
    b += bytes(range(0x80, 0xC0)) + b"\n"
    b += b"== leads that never start a character: C0 C1 F5..FF ==\n"
    for c in [0xC0, 0xC1] + list(range(0xF5, 0x100)):
        b += b"x" + bytes([c]) + b"y " + bytes([c, 0x80]) + b" " + bytes([c, 0x80, 0x80, 0x80]) + b" " + bytes([c]) * 3 + b"'s\n"
    b += b"== overlong forms ==\n"
    for seq in (b"\xc0\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x80\x80\x80",
                b"\xf0\x80\x80\xaf", b"\xf0\x8f\xbf\xbf", b"\xf8\x80\x80\x80\xaf", b"\xfc\x80\x80\x80\x80\xaf"):
        b += b"<" + seq + b"> " + seq + seq + b" a" + seq + b"1\n"
    b += b"== surrogates in UTF-8 (CESU-8) ==\n"
    for cp in (0xD800, 0xDB7F, 0xDB80, 0xDBFF, 0xDC00, 0xDFFF):
        s = chr(cp).encode("utf-8", "surrogatepass")
        b += b"s" + s + b"t " + s + b"\n"
    b += "\U0001F600".encode("utf-8") + b" "  # valid, for contrast
    b += b"\xed\xa0\xbd\xed\xb8\x80 \xed\xa0\x80\xed\xb0\x80\n"  # U+1F600 and U+10000 as surrogate pairs
    b += b"== above U+10FFFF ==\n\xf4\x90\x80\x80 \xf4\xbf\xbf\xbf \xf7\xbf\xbf\xbf \xf4\x8f\xbf\xbf(valid U+10FFFF)\n"
    b += b"== truncated sequences in the middle ==\n"
    for seq in (b"\xc3", b"\xe2", b"\xe2\x82", b"\xf0", b"\xf0\x9f", b"\xf0\x9f\x98", b"\xf4\x8f\xbf", b"\xe0\xa0", b"\xed\x9f"):
        for after in (b"a", b" ", b"1", b"'s", b"\n", b"\xc3\xa9", b"\x80", seq, b"<|endoftext|>", b""):
            b += seq + after
        b += b"|\n"
    b += b"== a bad second byte: the first part is replaced, the byte starts afresh ==\n"
    b += b"\xe2\x28\xa1 \xe2\x82\x28 \xf0\x28\x8c\xbc \xf0\x90\x28\xbc \xf0\x28\x8c\x28 \xc3\x28 \xe0\x9f\x80 \xed\xa0\x80 \xf4\x90\x80\x80\n"
    b += b"== every byte 80..FF after a letter, a space, a digit and an apostrophe ==\n"
    for c in range(0x80, 0x100):
        b += b"w" + bytes([c]) + b" " + bytes([c]) + b"x 9" + bytes([c]) + b"9 '" + bytes([c]) + b"s\n"
    b += b"== random broken text ==\n"
    good = "word caf\u00e9 \u4e2d\u6587 \U0001F600 'll 123 \u00a0 \u3000\n".encode("utf-8")
    for i in range(4000):
        if rnd.random() < 0.5:
            j = randint(rnd, 0, len(good) - 1)
            b += good[j:j + randint(rnd, 1, 6)]
        else:
            b += bytes([randint(rnd, 0x80, 0xFF) for _ in range(randint(rnd, 1, 3))])
    b += b"\nends in a truncated sequence: \xf0\x9f\x98"
    return bytes(b)


def random_utf8_corrupted(rnd, valid):
    """Valid text with 1% of its bytes replaced by random ones."""
    b = bytearray(valid)
    for i in range(0, len(b)):
        if rnd.random() < 0.01:
            b[i] = randint(rnd, 0, 255)
    return bytes(b)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1 or any(a not in ("--long",) for a in sys.argv[1:] if a.startswith("--")):
        sys.exit("usage: /usr/bin/python3 tests/stress_text.py OUTDIR [--long]")
    out = args[0]
    rnd = random.Random(20240601)
    cats = by_category()
    v = os.path.join(out, "valid")
    iv = os.path.join(out, "invalid")
    files = {}  # name -> bytes, in order
    valid = {
        "unicode_categories.txt": unicode_categories(rnd, cats),
        "combining_marks.txt": combining_marks(rnd, cats),
        "spaces.txt": spaces_text(rnd),
        "emoji.txt": emoji_text(rnd, cats),
        "scripts.txt": scripts_text(rnd),
        "mixed_scripts.txt": mixed_scripts(rnd),
        "digits.txt": digits_text(rnd),
        "letters.txt": letters_text(rnd),
        "contractions.txt": contractions(),
        "crlf.txt": crlf_text(rnd),
        "controls.txt": controls_text(rnd),
        "endoftext.txt": endoftext_text(),
        "punctuation.txt": punctuation_text(rnd),
        "random_unicode.txt": random_unicode(rnd, cats),
        "bom.txt": bom_text(),
    }
    valid.update(whitespace_runs(rnd))
    valid.update(EDGES)
    for name, text in valid.items():
        files["valid/" + name] = write(os.path.join(v, name), text)
    distinct = write(os.path.join(v, "distinct_pieces.txt"), distinct_pieces(rnd))
    e = b"<|endoftext|>"
    invalid = {
        "invalid_utf8.bin": invalid_utf8(rnd),
        "truncated_end_2of3.bin": "euro \u20ac and a cut one: ".encode() + b"\xe2\x82",
        "truncated_end_3of4.bin": "smile \U0001F600 and a cut one: ".encode() + b"\xf0\x9f\x98",
        "truncated_end_lead.bin": b"caf\xc3",
        "truncated_start.bin": b"\x9f\x98\x80 starts inside a character\n",
        "single_ff.bin": b"\xff",
        "endoftext_invalid.bin": b"\xff" + e + b"\xc3" + e + b"\xe2\x82" + e + b"\x80\x80 " + e + b"\xf0\x9f\x98" + e + b"<|endo\xfftext|>" + e + b"\xed\xa0\x80",
        "random_bytes_uniform.bin": bytes(randint(rnd, 0, 255) for _ in range(65536)),
        "random_bytes_high.bin": bytes(randint(rnd, 0x80, 0xFF) if rnd.random() < 0.8 else randint(rnd, 0, 0x7F) for _ in range(65536)),
        "random_utf8_corrupted.bin": random_utf8_corrupted(rnd, files["valid/random_unicode.txt"][:200000]),
    }
    for name, data in invalid.items():
        files["invalid/" + name] = write(os.path.join(iv, name), data)
        try:
            data.decode("utf-8")
            sys.exit("stress_text.py: invalid/%s is valid UTF-8" % name)
        except UnicodeDecodeError:
            pass
    # joined, with "=\n#" between files (a place where alloy may cut for --threads)
    joined = b"".join(b"\n=== " + name.encode() + b" ===\n#" + data for name, data in files.items()
                      if os.path.basename(name) not in QUADRATIC)
    write(os.path.join(out, "concat_all.bin"), joined)
    assert len(joined) > 1 << 20
    if "--long" in sys.argv[1:]:
        lg = os.path.join(out, "long")
        write(os.path.join(lg, "digits_100k.txt"), "n=" + "".join(str(randint(rnd, 0, 9)) for _ in range(100000)) + " end")
        write(os.path.join(lg, "newlines_100k.txt"), "para" + "\n" * 100000 + "next")
        write(os.path.join(lg, "letters_50k.txt"), " " + "".join(pick(rnd, "etaoinshrdlu") for _ in range(50000)) + ".")
    total = sum(len(d) for d in files.values()) + len(distinct) + len(joined)
    print("stress_text.py: %d files, %d bytes in %s" % (len(files) + 2, total, out))


if __name__ == "__main__":
    main()
