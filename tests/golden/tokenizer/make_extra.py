#!/usr/bin/env python3
"""Extra tokenizer goldens from HF `tokenizers` (see README.md beside this file).

Usage: python3 make_extra.py OUTDIR     (run from the repository root)

Writes to OUTDIR:
  gpt-neox-20b.extra.json   cases for tests/fixtures/tokenizer/gpt-neox-20b.tokenizer.json
  demo-mamba1.extra.json    cases for models/demo-mamba1/tokenizer.json
  demo-variant.tokenizer.json  the demo tokenizer with add_prefix_space=True, a Sequence([NFC])
                            normalizer and added tokens using lstrip / rstrip / single_word /
                            normalized, saved by HF itself
  demo-variant.extra.json   cases for it

Each .extra.json is {"generator": {...}, "cases": [{text, ids, decoded}],
"decode_cases": [{ids, skip_special, decoded}]}: ids = encode(text, add_special_tokens=False).ids,
decoded = decode(ids, skip_special_tokens=False); decode_cases decode random id lists (lone bytes
of multi-byte characters, special tokens) with and without skip_special_tokens.
Deterministic: every random choice comes from random.Random(SEED).
"""
import json
import os
import platform
import random
import sys
import unicodedata

import tokenizers
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, decoders

SEED = 20240611

SPECIALS = ["<|endoftext|>", "<|padding|>", "<|im_start|>", "<|im_end|>", "assistant", "RWKV"]

HAND = [
    # contractions, case
    "don't can't won't I'm you're we've they'll she'd it's",
    "DON'T CAN'T I'M YOU'RE WE'VE THEY'LL SHE'D IT'S",
    "It'S John'S dog'S 'S 's 'sup ''s '''",
    "rock'n'roll o'clock y'all'd've",
    "'s'd'm'll're've't",
    " 's  't   're",
    # numbers
    "1234567890 12345678901234567890 3.14159 -42 +7 1e10 0x1F 1,000,000 10%",
    "٣٤٥ ۱۲۳ १२३ ①②③ ⅫⅣ ½ ¾ ²³ 一二三",
    "v1.2.3-rc4 2024-06-11T12:34:56Z 192.168.0.1:8080",
    # whitespace
    " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\n ", "\t\t\t", " \t \t ",
    "a b", "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a \tb", "a\t b", "a\nb", "a\n\nb",
    "a\r\nb", "a \r\n b", "a\n \n b", "  a  ", "a  ", "  a", "a\n", "\na",
    "x" + " " * 25 + "y", "x" + " " * 24 + "y", "x" + " " * 23 + "y", "x" + " " * 49 + "y",
    " " * 60, " " * 100 + "end", "\n" * 30, "\t" * 17 + "tabbed", " \n" * 20,
    "line one  \n  line two\t\n\tline three   \n\n   ",
    "trailing spaces    ", "    leading spaces", "mixed \t \n \r\n \u00a0 \u3000 end",
    "nbsp\u00a0here and\u00a0\u00a0two", "ideographic\u3000space", "em\u2003space thin\u2009space",
    "line\u2028sep para\u2029sep", "nel\u0085char a\u0085\u0085b \u0085 x", "mongolian\u180evowel",
    "zero\u200bwidth joiner\u200dnon\u200cjoiner", "bom\ufeffinside", "\ufeffbom first",
    # control characters
    "nul\x00byte", "\x00", "bell\x07 esc\x1b[31mred\x1b[0m del\x7f", "\x01\x02\x03\x1c\x1d\x1e\x1f",
    "\x0b vertical tab \x0c form feed", "a\x1cb\x1dc\x1ed\x1fe",
    # NFC: NFD input, singletons, reordering
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",
    "e\u0301", "E\u0301\u0301", "n\u0303 o\u0302 u\u0308 c\u0327",
    "\u212b angstrom sign, \u2126 ohm sign, \u212a kelvin",
    "a\u0323\u0302 a\u0302\u0323 q\u0307\u0323 \u1e0b\u0323",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "\uf900\uf901 compatibility ideographs", "\u0344 \u0340\u0341 \u0958 \u2adc",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "ﬁ ﬂ ligatures", "Ⓐⓑⓒ circled",
    "\u0301leading combining mark", "x\u20dd enclosing",
    # scripts
    "日本語のテキストと中文字符、한국어 텍스트。",
    "東京都は日本の首都です。人口は約1400万人。",
    "Привет, мир! Как дела?", "Γειά σου Κόσμε", "สวัสดีชาวโลก", "नमस्ते दुनिया",
    "مرحبا بالعالم 123", "שלום עולם", "mixed ltr עברית and العربية rtl",
    "\u202eRLO override\u202c \u200fRLM\u200e", "ሰላም ዓለም", "Բարեւ", "ქართული",
    # emoji
    "😀🎉👍🏽", "👨‍👩‍👧‍👦 family", "👩🏿‍🔬 scientist", "🏳️‍🌈 🏴‍☠️", "🇵🇱🇺🇸🇯🇵",
    "1️⃣ #️⃣ *️⃣", "❤️ ❤ ♥️", "🤷‍♀️🤷🏻‍♂️", "emoji😀in😀words", "😀😀😀😀😀😀😀😀",
    "🧑‍🤝‍🧑 🫠 🦀", "\U0001f600\U0001f3fb alone tone",
    # code
    "def f(x):\n    return x * 2  # code\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (i = 0; i < n; i++) { a[i] += b[i] * c; }",
    "if x == 1 and y != 2 or z >= 3: pass",
    "<html><body class=\"main\">Hi &amp; bye</body></html>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "SELECT * FROM users WHERE id = 42;", "x = {**a, **b}; y = [*c, *d]",
    "https://example.com/path?q=1&r=two#frag", "user@example.com",
    "    indented four\n        indented eight\n\tand a tab",
    "```python\nprint('hi')\n```", "| a | b |\n|---|---|\n| 1 | 2 |",
    "~!@#$%^&*()_+-=[]{}|;':\",./<>?`", "...!!!???---___===",
    "aGVsbG8gd29ybGQ=", "0123456789abcdef" * 4,
    # special tokens
    "<|endoftext|>", "<|endoftext|><|endoftext|>", "a<|endoftext|>b",
    "<|endoftext|>special token inside<|endoftext|>", " <|endoftext|> ",
    "  <|endoftext|>  ", "\n<|endoftext|>\n", "<|endoftext|", "|endoftext|>", "<|endoftext|>>",
    "<<|endoftext|>", "<|padding|>pad", "<|im_start|>assistant\nHi there<|im_end|>",
    "<|im_start|>user\nWhat is RWKV?<|im_end|>\n<|im_start|>assistant\n",
    "assistants assistant's Assistant ASSISTANT", "RWKV-4 RWKVRWKV rwkv", "xassistanty",
    "the assistant  said", "<|endoftext|>  double", "word<|endoftext|>   spaces",
    "caf\u0065\u0301<|endoftext|>\u0301after",
    # long
    "The quick brown fox jumps over the lazy dog. " * 8,
    "a" * 300, "ab" * 150, "Supercalifragilisticexpialidocious" * 3, "9" * 120,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation.",
    # odd code points
    "\ue000 private use \U000f0000", "\ufffe\uffff noncharacters \U0010ffff", "\u0378 unassigned",
    "\ufffd replacement char", "\u00ad soft hyphen", "a\u0300\u0301\u0302\u0303\u0304\u0305",
    # whitespace classes where Oniguruma, PCRE2 and Python disagree (U+180E, NEL, \x1c)
    "!\u180e?", "x\u180e\n", "a\u180e\u180e b", "\u180e", ".\u0085,", "x\u0085\n",
    "\u0085\u0085", "a\u0085 b", "!\x1c?", "x\x1c\n", "!\u2028?", "x\u3000\n", "!\u00a0?",
    "re\u0301sume\u0301  double  \u00e9  x",
]

POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digit": "0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "space": [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u0085", "   "],
    "latin": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœŒĀāĂăĄą",
    "comb": ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u0323", "\u0327", "\u030a"],
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "kana": "あいうえおかきくけこアイウエオカキクケコ",
    "hangul": "가나다라마바사아자차카타파하",
    "emoji": ["😀", "🎉", "👍", "🏽", "👨‍👩‍👧", "🇵🇱", "❤️", "\u200d", "\ufe0f", "🦀"],
    "word": ["the", "of", "and", "to", "in", "is", "it's", "don't", "HTTP", "Python", "über",
             "naïve", "x", "foo_bar", "fooBar", "'s", "'ll"],
    "special": SPECIALS,
}


def random_text(rng):
    parts = []
    keys = list(POOLS)
    weights = [5, 2, 3, 4, 2, 1, 2, 1, 1, 1, 6, 1]
    for _ in range(rng.randint(1, 40)):
        k = rng.choices(keys, weights)[0]
        parts.append(rng.choice(POOLS[k]))
    return "".join(parts)


def random_utf8_bytes(rng):
    """Random bytes, with the invalid parts dropped: valid UTF-8 that is mostly ASCII/control."""
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 120)))
    return raw.decode("utf-8", errors="ignore")


# Code points from long-assigned blocks (so Unicode version differences do not matter).
BLOCKS = [(0x20, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x5D0, 0x5EA), (0x620, 0x64A),
          (0x905, 0x939), (0xE01, 0xE3A), (0x2000, 0x206F), (0x2190, 0x22FF), (0x3041, 0x3096),
          (0x4E00, 0x9FA5), (0xAC00, 0xD7A3), (0xFF01, 0xFF5E), (0x1F600, 0x1F64F)]


def random_codepoints(rng):
    out = []
    for _ in range(rng.randint(1, 50)):
        lo, hi = rng.choice(BLOCKS)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def texts(rng):
    out = list(HAND)
    out += [random_text(rng) for _ in range(110)]
    out += [random_utf8_bytes(rng) for _ in range(30)]
    out += [random_codepoints(rng) for _ in range(30)]
    # NFD versions of some texts: NFC must recompose them.
    out += [unicodedata.normalize("NFD", t) for t in out[:60] if unicodedata.normalize("NFD", t) != t]
    return out


def variant_tokenizer(path):
    """The demo tokenizer with every added-token option exercised, saved by HF itself."""
    tok = Tokenizer.from_file(path)
    tok.normalizer = normalizers.Sequence([normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([
        AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False),
        AddedToken("[SEP]", lstrip=True, special=False, normalized=False),
        AddedToken("[END]", rstrip=True, special=False, normalized=False),
        AddedToken("cat", single_word=True, normalized=True),
        AddedToken("dog", single_word=True, normalized=False),
        AddedToken("e\u0301te\u0301", normalized=True),
        AddedToken("abc", normalized=False),
        AddedToken("ab", normalized=False),
        AddedToken("bcd", normalized=False),
        AddedToken(" x", normalized=False),
        AddedToken("xyz", special=True, normalized=True),
        AddedToken("\u00e9t\u00e9s", normalized=False),
    ])
    return tok


VARIANT_HAND = [
    "a <mask> b", "a<mask>b", "a   <mask>   b", "<mask>", "  <mask>", "<mask>  ", "\t<mask>\n",
    "x [SEP] y", "x   [SEP]y", "[SEP][SEP]", "x [END]   y", "[END]", "[END] [SEP]",
    "[END] x", "[END]   [SEP]", "[END] <mask> [SEP]", "<mask> <mask>",
    "cat", "a cat", "cats", "concat", "cat_", "cat!", "cat's", "the cat sat", "écat", "cat1",
    "dog", "dogs", "hotdog", "dog dog", "_dog", "dog\u0301", "\u0301dog",
    "été", "e\u0301te\u0301", "ete", "étés", "e\u0301te\u0301s",
    "abcd", "abc", "ab", "bcd", "xabcdx", "ababcbcd", "a bcd",
    "xyz", "xyzxyz", " xyz ", "x y z", " x", "  x", "a x b", "[END] x",
    "hello world", " hello", "hello  world", "<|endoftext|>hello", "hello<|endoftext|>",
    "\u00a0<mask>\u00a0", "\u3000[SEP]", "[END]\u2028next", "cat\u00a0dog",
    # single_word uses Rust's \w: Alphabetic, marks, Nd, Pc, Join_Control (not No)
    "cat\u00b2", "\u00b2cat", "cat\u2160", "cat\u24b6", "cat\u200d", "cat\u203f", "cat\u0663",
    "cat\u00bd", "cat\u0301", "\u0301cat", "dog\u0903", "dog\u20dd", "\U0001f170dog", "dog\U0001f130",
    # lstrip / rstrip use White_Space (NEL yes, U+180E no)
    "\u0085<mask>\u180e", "x\u180e[SEP]", "[END]\u0085\u180ey", "x\u0085 [SEP]",
]


def case_list(tok, items):
    cases = []
    for t in items:
        ids = tok.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    return cases


def decode_cases(tok, rng, n):
    vocab = tok.get_vocab_size(with_added_tokens=True)
    added = sorted(tok.get_added_tokens_decoder().keys())
    out = []
    for i in range(n):
        ids = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.15 and added:
                ids.append(rng.choice(added))
            elif r < 0.6:
                ids.append(rng.randrange(min(vocab, 300)))  # mostly single bytes / short pieces
            else:
                ids.append(rng.randrange(vocab))
        skip = bool(i % 2)
        out.append({"ids": ids, "skip_special": skip,
                    "decoded": tok.decode(ids, skip_special_tokens=skip)})
    return out


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    gen = {
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
        "unicodedata": unicodedata.unidata_version,
        "seed": SEED,
        "script": "tests/golden/tokenizer/make_extra.py",
    }
    print("tokenizers", tokenizers.__version__, "python", platform.python_version(),
          "unicodedata", unicodedata.unidata_version)
    rng = random.Random(SEED)
    common = texts(rng)
    jobs = [
        ("gpt-neox-20b", Tokenizer.from_file("tests/fixtures/tokenizer/gpt-neox-20b.tokenizer.json"),
         common),
        ("demo-mamba1", Tokenizer.from_file("models/demo-mamba1/tokenizer.json"), common),
    ]
    variant = variant_tokenizer("models/demo-mamba1/tokenizer.json")
    with open(os.path.join(outdir, "demo-variant.tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(variant.to_str(pretty=True))
    # Reload from the saved file, so the goldens are what the file (not the object) gives.
    variant = Tokenizer.from_file(os.path.join(outdir, "demo-variant.tokenizer.json"))
    jobs.append(("demo-variant", variant, VARIANT_HAND + common[:150]))
    for name, tok, items in jobs:
        doc = {"generator": dict(gen, tokenizer=name), "cases": case_list(tok, items),
               "decode_cases": decode_cases(tok, rng, 60)}
        with open(os.path.join(outdir, name + ".extra.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(name, len(doc["cases"]), "cases,", len(doc["decode_cases"]), "decode cases")


if __name__ == "__main__":
    main()
