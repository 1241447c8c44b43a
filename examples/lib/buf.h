/* A growable byte buffer and JSON helpers shared by the zz example guests. */
#ifndef ZZ_BUF_H
#define ZZ_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} buf_t;

/* Appends; on allocation failure abort() (a deterministic trap: the host answers 500). */
void buf_put(buf_t *b, const void *data, size_t len);
void buf_puts(buf_t *b, const char *s);
void buf_putc(buf_t *b, char c);
void buf_put_u64(buf_t *b, uint64_t v);
/* Appends `s` as a JSON string literal, quotes included. */
void buf_put_json_str(buf_t *b, const uint8_t *s, size_t len);
void buf_free(buf_t *b);

/* Parses a decimal u64 (no sign, no spaces, no overflow); false if malformed. */
bool parse_u64(const uint8_t *s, size_t len, uint64_t *out);

/* Whether `s` is well-formed UTF-8 (no overlongs, surrogates or NUL). */
bool utf8_valid(const uint8_t *s, size_t len);

/* The 8-byte little-endian encoding counters use (see examples/README.md). */
void u64_to_le(uint64_t v, uint8_t out[8]);
/* false unless `len` is 8. */
bool u64_from_le(const uint8_t *p, size_t len, uint64_t *out);

/*
 * A tiny JSON reader: the top-level value must be an object; each member
 * whose name is in `names` and whose value is a string is unescaped into the
 * matching `out` buffer (NUL-terminated there too). Other members are
 * skipped. Returns false on malformed JSON, a duplicate wanted member, or a
 * wanted member that is not a string.
 */
bool json_read_strings(const uint8_t *s, size_t len, const char *const *names, buf_t *out,
                       bool *present, size_t n);

#endif
