/*
 * Unicode helpers for the tokenizer (see unicode.h): class lookup over the
 * generated tables, the two UTF-8 decoders (llama.cpp-compatible lenient one
 * for tokenizing, strict one for output), and the GPT-2 byte map.
 */
#include "unicode.h"

uint16_t
unicode_flags(uint32_t cpt)
{
	size_t lo, hi, mid;

	if (cpt < 256)
		return unicode_latin1_flags[cpt];
	if (cpt >= UNICODE_MAX_CPT)
		return UNICODE_UNDEFINED;
	/* Last range whose start is <= cpt; unicode_ranges[0].start is 0. */
	lo = 0;
	hi = unicode_n_ranges;
	while (hi - lo > 1) {
		mid = lo + (hi - lo) / 2;
		if (unicode_ranges[mid].start <= cpt)
			lo = mid;
		else
			hi = mid;
	}
	return unicode_ranges[lo].flags;
}

static int
is_cont(uint8_t b)
{
	return (b & 0xc0) == 0x80;
}

uint32_t
unicode_decode_lenient(const char *str, size_t len, size_t *pos)
{
	const uint8_t *s = (const uint8_t *)str + *pos;
	size_t left = len - *pos;
	uint32_t cpt;

	if (s[0] < 0x80) {
		*pos += 1;
		return s[0];
	}
	if ((s[0] & 0x40) == 0)
		goto bad;
	if ((s[0] & 0x20) == 0) {
		if (left < 2 || !is_cont(s[1]))
			goto bad;
		*pos += 2;
		return ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f);
	}
	if ((s[0] & 0x10) == 0) {
		if (left < 3 || !is_cont(s[1]) || !is_cont(s[2]))
			goto bad;
		*pos += 3;
		return ((uint32_t)(s[0] & 0x0f) << 12) |
		    ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
	}
	if ((s[0] & 0x08) == 0) {
		if (left < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
			goto bad;
		cpt = ((uint32_t)(s[0] & 0x07) << 18) |
		    ((uint32_t)(s[1] & 0x3f) << 12) |
		    ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
		if (cpt >= UNICODE_MAX_CPT)
			goto bad;
		*pos += 4;
		return cpt;
	}
bad:
	*pos += 1;
	return UNICODE_REPLACEMENT;
}

size_t
unicode_seq_len(uint8_t lead)
{
	static const uint8_t len_by_nibble[16] = {
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4
	};

	return len_by_nibble[lead >> 4];
}

size_t
unicode_encode(uint32_t cpt, char out[4])
{
	if (cpt < 0x80) {
		out[0] = (char)cpt;
		return 1;
	}
	if (cpt < 0x800) {
		out[0] = (char)(0xc0 | (cpt >> 6));
		out[1] = (char)(0x80 | (cpt & 0x3f));
		return 2;
	}
	if (cpt < 0x10000) {
		out[0] = (char)(0xe0 | (cpt >> 12));
		out[1] = (char)(0x80 | ((cpt >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cpt & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | ((cpt >> 18) & 0x07));
	out[1] = (char)(0x80 | ((cpt >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cpt >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cpt & 0x3f));
	return 4;
}

int
unicode_utf8_check(const uint8_t *s, size_t len)
{
	uint8_t lo = 0x80, hi = 0xbf;
	size_t need, i;

	if (len == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		need = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;	/* no surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;	/* nothing past U+10FFFF */
	} else
		return -1;
	/* Only the second byte has a narrowed range. */
	for (i = 1; i < need; i++) {
		if (i >= len)
			return 0;
		if (s[i] < lo || s[i] > hi)
			return -(int)i;
		lo = 0x80;
		hi = 0xbf;
	}
	return (int)need;
}

bool
unicode_utf8_valid(const char *str, size_t len)
{
	const uint8_t *s = (const uint8_t *)str;
	size_t pos = 0;
	int n;

	while (pos < len) {
		n = unicode_utf8_check(s + pos, len - pos);
		if (n <= 0)
			return false;
		pos += (size_t)n;
	}
	return true;
}

/*
 * GPT-2 maps the 188 printable bytes ('!'..'~', U+00A1..U+00AC,
 * U+00AE..U+00FF) to themselves and the other 68 bytes, in order, to
 * U+0100..U+0143, so that every byte has a visible, non-space character.
 */
static bool
gpt2_printable(uint32_t b)
{
	return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) ||
	    (b >= 0xae && b <= 0xff);
}

uint32_t
unicode_gpt2_byte_to_cpt(uint8_t b)
{
	if (gpt2_printable(b))
		return b;
	if (b <= 0x20)
		return 0x100 + b;
	if (b <= 0xa0)
		return 0x100 + 0x21 + (b - 0x7f);
	return 0x100 + 0x21 + 0x22;	/* 0xad, the soft hyphen */
}

int
unicode_gpt2_cpt_to_byte(uint32_t cpt)
{
	if (cpt < 0x100)
		return gpt2_printable(cpt) ? (int)cpt : -1;
	if (cpt <= 0x120)
		return (int)(cpt - 0x100);
	if (cpt <= 0x142)
		return (int)(cpt - 0x121 + 0x7f);
	if (cpt == 0x143)
		return 0xad;
	return -1;
}
