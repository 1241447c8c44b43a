#include "buf.h"

#include <stdlib.h>
#include <string.h>

void buf_put(buf_t *b, const void *data, size_t len) {
    if (len == 0)
        return;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = realloc(b->ptr, cap);
        if (!p)
            abort();
        b->ptr = p;
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, len);
    b->len += len;
}

void buf_puts(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

void buf_putc(buf_t *b, char c) { buf_put(b, &c, 1); }

void buf_put_u64(buf_t *b, uint64_t v) {
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_put(b, tmp + i, sizeof tmp - i);
}

void buf_put_json_str(buf_t *b, const uint8_t *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    buf_putc(b, '"');
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        /* '<' escaped too, so a stored string never closes a <script> element. */
        case '<':
        case '>':
        case '&':
        default:
            if (c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7f) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                buf_put(b, e, 6);
            } else {
                buf_putc(b, (char)c);
            }
        }
    }
    buf_putc(b, '"');
}

void buf_free(buf_t *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

bool parse_u64(const uint8_t *s, size_t len, uint64_t *out) {
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool utf8_valid(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        uint32_t cp, min;
        size_t n;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            cp = c & 0x1f; n = 1; min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            cp = c & 0x0f; n = 2; min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            cp = c & 0x07; n = 3; min = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
            return false;
        i += n + 1;
    }
    return true;
}

void u64_to_le(uint64_t v, uint8_t out[8]) {
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

bool u64_from_le(const uint8_t *p, size_t len, uint64_t *out) {
    if (len != 8)
        return false;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    *out = v;
    return true;
}

/* ---- JSON reader ---- */

typedef struct {
    const uint8_t *s;
    size_t len, pos;
    int depth;
} rd_t;

#define MAX_DEPTH 32

static void ws(rd_t *r) {
    while (r->pos < r->len) {
        uint8_t c = r->s[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        r->pos++;
    }
}

static bool lit(rd_t *r, const char *w) {
    size_t n = strlen(w);
    if (r->len - r->pos < n || memcmp(r->s + r->pos, w, n) != 0)
        return false;
    r->pos += n;
    return true;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(rd_t *r, uint32_t *out) {
    if (r->len - r->pos < 4)
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->s[r->pos + i]);
        if (h < 0)
            return false;
        v = (v << 4) | (uint32_t)h;
    }
    r->pos += 4;
    *out = v;
    return true;
}

static void put_utf8(buf_t *b, uint32_t cp) {
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (uint8_t)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (uint8_t)(0xc0 | cp >> 6); u[1] = (uint8_t)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) { u[0] = (uint8_t)(0xe0 | cp >> 12); u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f)); u[2] = (uint8_t)(0x80 | (cp & 0x3f)); n = 3; }
    else { u[0] = (uint8_t)(0xf0 | cp >> 18); u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f)); u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (uint8_t)(0x80 | (cp & 0x3f)); n = 4; }
    buf_put(b, u, n);
}

/* Reads a string literal at r->pos; unescaped into `out` unless it is NULL. */
static bool str(rd_t *r, buf_t *out) {
    if (r->pos >= r->len || r->s[r->pos] != '"')
        return false;
    r->pos++;
    while (r->pos < r->len) {
        uint8_t c = r->s[r->pos++];
        if (c == '"')
            return true;
        if (c < 0x20)
            return false;
        if (c != '\\') {
            if (out)
                buf_putc(out, (char)c);
            continue;
        }
        if (r->pos >= r->len)
            return false;
        uint8_t e = r->s[r->pos++];
        char ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (!hex4(r, &cp))
                return false;
            if (cp >= 0xd800 && cp < 0xdc00) {
                uint32_t lo;
                if (!lit(r, "\\u") || !hex4(r, &lo) || lo < 0xdc00 || lo >= 0xe000)
                    return false;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                return false;
            }
            if (out)
                put_utf8(out, cp);
            continue;
        }
        default:
            return false;
        }
        if (out)
            buf_putc(out, ch);
    }
    return false;
}

static bool value(rd_t *r);

static bool number(rd_t *r) {
    size_t start = r->pos;
    if (r->pos < r->len && r->s[r->pos] == '-')
        r->pos++;
    size_t digits = r->pos;
    while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
        r->pos++;
    if (r->pos == digits)
        return false;
    if (r->pos < r->len && r->s[r->pos] == '.') {
        r->pos++;
        size_t frac = r->pos;
        while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
            r->pos++;
        if (r->pos == frac)
            return false;
    }
    if (r->pos < r->len && (r->s[r->pos] == 'e' || r->s[r->pos] == 'E')) {
        r->pos++;
        if (r->pos < r->len && (r->s[r->pos] == '+' || r->s[r->pos] == '-'))
            r->pos++;
        size_t exp = r->pos;
        while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
            r->pos++;
        if (r->pos == exp)
            return false;
    }
    return r->pos > start;
}

static bool container(rd_t *r, bool object) {
    if (++r->depth > MAX_DEPTH)
        return false;
    r->pos++; /* '{' or '[' */
    ws(r);
    char close = object ? '}' : ']';
    if (r->pos < r->len && r->s[r->pos] == close) {
        r->pos++;
        r->depth--;
        return true;
    }
    for (;;) {
        ws(r);
        if (object) {
            if (!str(r, NULL))
                return false;
            ws(r);
            if (!lit(r, ":"))
                return false;
            ws(r);
        }
        if (!value(r))
            return false;
        ws(r);
        if (lit(r, ","))
            continue;
        if (r->pos < r->len && r->s[r->pos] == close) {
            r->pos++;
            r->depth--;
            return true;
        }
        return false;
    }
}

static bool value(rd_t *r) {
    if (r->pos >= r->len)
        return false;
    switch (r->s[r->pos]) {
    case '{': return container(r, true);
    case '[': return container(r, false);
    case '"': return str(r, NULL);
    case 't': return lit(r, "true");
    case 'f': return lit(r, "false");
    case 'n': return lit(r, "null");
    default: return number(r);
    }
}

bool json_read_strings(const uint8_t *s, size_t len, const char *const *names, buf_t *out,
                       bool *present, size_t n) {
    rd_t r = {s, len, 0, 1};
    buf_t name = {0};
    bool ok = false;
    for (size_t i = 0; i < n; i++)
        present[i] = false;
    ws(&r);
    if (!lit(&r, "{"))
        goto done;
    ws(&r);
    if (lit(&r, "}"))
        goto end;
    for (;;) {
        ws(&r);
        name.len = 0;
        if (!str(&r, &name))
            goto done;
        ws(&r);
        if (!lit(&r, ":"))
            goto done;
        ws(&r);
        size_t want = n;
        for (size_t i = 0; i < n; i++)
            if (strlen(names[i]) == name.len && memcmp(names[i], name.ptr, name.len) == 0)
                want = i;
        if (want < n) {
            if (present[want])
                goto done;
            out[want].len = 0;
            if (!str(&r, &out[want]))
                goto done;
            buf_putc(&out[want], '\0');
            out[want].len--;
            present[want] = true;
        } else if (!value(&r)) {
            goto done;
        }
        ws(&r);
        if (lit(&r, ","))
            continue;
        if (lit(&r, "}"))
            break;
        goto done;
    }
end:
    ws(&r);
    ok = r.pos == r.len;
done:
    buf_free(&name);
    return ok;
}
