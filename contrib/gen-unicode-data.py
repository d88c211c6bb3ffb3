#!/usr/bin/env python3
#
# Generates src/unicode_data.c: the Unicode character class tables that the
# BPE pre-tokenizers in src/tokenizer.c need (\p{L}, \p{N}, \p{P}, \p{M},
# \p{S}, separators, controls, unassigned, and the White_Space property).
#
# Run by hand, never at build time; the output is committed:
#
#     python3 contrib/gen-unicode-data.py > src/unicode_data.c
#     python3 contrib/gen-unicode-data.py --ucd /usr/share/unicode > src/unicode_data.c
#
# Without --ucd the general categories come from Python's unicodedata module
# (whose Unicode version is that of the Python build).  With --ucd DIR they
# come from DIR/UnicodeData.txt and the White_Space property from
# DIR/PropList.txt (Debian's package unicode-data installs them in
# /usr/share/unicode).  llama.cpp's tables are Unicode 15.1; when the source
# is exactly 15.0.0 the 627 characters that 15.1 added (all listed below) are
# applied on top so the result is 15.1.0.
#
# Output: a 256-entry table for U+0000..U+00FF (the common case, one load)
# and a sorted range table (start, flags) covering U+0000..U+10FFFF for the
# rest, searched by binary search.

import argparse
import os
import re
import sys
import unicodedata

MAX_CPT = 0x110000

# Flag bits; must match src/unicode.h.
UNDEFINED = 0x0001
NUMBER = 0x0002
LETTER = 0x0004
SEPARATOR = 0x0008
MARK = 0x0010
PUNCT = 0x0020
SYMBOL = 0x0040
CONTROL = 0x0080
WHITESPACE = 0x0100

CATEGORY_FLAGS = {
    'Lu': LETTER, 'Ll': LETTER, 'Lt': LETTER, 'Lm': LETTER, 'Lo': LETTER,
    'Mn': MARK, 'Mc': MARK, 'Me': MARK,
    'Nd': NUMBER, 'Nl': NUMBER, 'No': NUMBER,
    'Pc': PUNCT, 'Pd': PUNCT, 'Ps': PUNCT, 'Pe': PUNCT, 'Pi': PUNCT,
    'Pf': PUNCT, 'Po': PUNCT,
    'Sm': SYMBOL, 'Sc': SYMBOL, 'Sk': SYMBOL, 'So': SYMBOL,
    'Zs': SEPARATOR, 'Zl': SEPARATOR, 'Zp': SEPARATOR,
    'Cc': CONTROL, 'Cf': CONTROL, 'Cs': CONTROL, 'Co': CONTROL,
    'Cn': UNDEFINED,
}

# The White_Space property (PropList.txt); unchanged since Unicode 6.3.
WHITE_SPACE = [
    (0x0009, 0x000D), (0x0020, 0x0020), (0x0085, 0x0085),
    (0x00A0, 0x00A0), (0x1680, 0x1680), (0x2000, 0x200A),
    (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
    (0x3000, 0x3000),
]

# Characters added in Unicode 15.1 (over 15.0), with their categories.
ADDED_15_1 = [
    (0x2EBF0, 0x2EE5D, 'Lo'),  # CJK Unified Ideographs Extension I
    (0x2FFC, 0x2FFF, 'So'),    # ideographic description characters
    (0x31EF, 0x31EF, 'So'),    # CJK stroke HXG
]


def categories_from_python():
    cats = [unicodedata.category(chr(c)) for c in range(MAX_CPT)]
    return cats, unicodedata.unidata_version


def categories_from_ucd(path):
    cats = ['Cn'] * MAX_CPT
    first = None
    with open(os.path.join(path, 'UnicodeData.txt'), encoding='ascii') as f:
        for line in f:
            fields = line.rstrip('\n').split(';')
            if len(fields) < 3:
                continue
            cpt = int(fields[0], 16)
            name, cat = fields[1], fields[2]
            if name.endswith(', First>'):
                first = cpt
                continue
            if name.endswith(', Last>'):
                for c in range(first, cpt + 1):
                    cats[c] = cat
                first = None
                continue
            cats[cpt] = cat
    version = None
    with open(os.path.join(path, 'PropList.txt'), encoding='utf-8') as f:
        m = re.match(r'# PropList-(\d+\.\d+\.\d+)\.txt', f.readline())
        if m:
            version = m.group(1)
    return cats, version


def white_space_from_ucd(path):
    spans = []
    with open(os.path.join(path, 'PropList.txt'), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            rng, prop = [x.strip() for x in line.split(';')]
            if prop != 'White_Space':
                continue
            if '..' in rng:
                a, b = rng.split('..')
                spans.append((int(a, 16), int(b, 16)))
            else:
                spans.append((int(rng, 16), int(rng, 16)))
    return spans


def expand(spans):
    return set(c for lo, hi in spans for c in range(lo, hi + 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--ucd', help='directory with UnicodeData.txt and PropList.txt')
    args = ap.parse_args()

    if args.ucd:
        cats, version = categories_from_ucd(args.ucd)
        spans = white_space_from_ucd(args.ucd)
        if expand(spans) != expand(WHITE_SPACE):
            sys.exit('White_Space in PropList.txt differs from the built-in list')
    else:
        cats, version = categories_from_python()
    if version is None:
        sys.exit('cannot tell the Unicode version of the source')

    if version == '15.0.0':
        for lo, hi, cat in ADDED_15_1:
            for c in range(lo, hi + 1):
                if cats[c] != 'Cn':
                    sys.exit('U+%04X is already assigned in 15.0.0' % c)
                cats[c] = cat
        version = '15.1.0'

    flags = [CATEGORY_FLAGS[c] for c in cats]
    for lo, hi in WHITE_SPACE:
        for c in range(lo, hi + 1):
            flags[c] |= WHITESPACE

    # The (?i:'s|'t|...) contractions are matched with ASCII case folding;
    # that is exact only if no other character lowercases to one of these.
    for c in range(0x80, MAX_CPT):
        low = chr(c).lower()
        if len(low) == 1 and low in 'stmdrvel':
            sys.exit('U+%04X lowercases to %r' % (c, low))

    ranges = []
    for c in range(MAX_CPT):
        if not ranges or ranges[-1][1] != flags[c]:
            ranges.append((c, flags[c]))

    out = sys.stdout
    out.write('/*\n')
    out.write(' * Unicode %s character classes for the tokenizer\'s pre-tokenizers.\n'
              % version)
    out.write(' * Generated by contrib/gen-unicode-data.py; do not edit.\n')
    out.write(' */\n')
    out.write('#include "unicode.h"\n\n')
    out.write('const char unicode_data_version[] = "%s";\n\n' % version)
    out.write('const uint16_t unicode_latin1_flags[256] = {\n')
    for i in range(0, 256, 8):
        out.write('\t' + ' '.join('0x%04x,' % flags[c] for c in range(i, i + 8)) + '\n')
    out.write('};\n\n')
    out.write('const struct unicode_range unicode_ranges[] = {\n')
    for start, fl in ranges:
        out.write('\t{ 0x%06x, 0x%04x },\n' % (start, fl))
    out.write('};\n\n')
    out.write('const size_t unicode_n_ranges = %d;\n' % len(ranges))


if __name__ == '__main__':
    main()
