/*
 * counter: GET / -> {"count":N}; POST /incr (body: optional decimal amount,
 * default 1) -> {"count":N}; POST /reset -> {"count":0}.
 * The count lives under key "count" as an 8-byte little-endian u64.
 */
#include <string.h>

#include "http.h"

static const char KEY[] = "count";

static void respond_count(http_outparam_t out, uint64_t n) {
    buf_t b = {0};
    buf_puts(&b, "{\"count\":");
    buf_put_u64(&b, n);
    buf_putc(&b, '}');
    http_respond(out, 200, "application/json", b.ptr, b.len);
    buf_free(&b);
}

/* The amount in a POST /incr body: surrounding whitespace ignored, empty means 1. */
static bool amount(const buf_t *body, uint64_t *out) {
    size_t s = 0, e = body->len;
    while (s < e && strchr(" \t\r\n", body->ptr[s]))
        s++;
    while (e > s && strchr(" \t\r\n", body->ptr[e - 1]))
        e--;
    if (s == e) {
        *out = 1;
        return true;
    }
    return parse_u64(body->ptr + s, e - s, out);
}

static void handle(http_request_t *req, http_outparam_t out) {
    bool root = strcmp(req->path, "/") == 0;
    bool incr = strcmp(req->path, "/incr") == 0;
    bool reset = strcmp(req->path, "/reset") == 0;
    if (!root && !incr && !reset) {
        http_respond_error(out, 404, "no such route");
        return;
    }
    uint8_t want = root ? WASI_HTTP_TYPES_METHOD_GET : WASI_HTTP_TYPES_METHOD_POST;
    if (req->method != want) {
        http_respond_error(out, 405, "method not allowed");
        return;
    }
    uint64_t delta = 0;
    if (incr && (req->body_too_large || !amount(&req->body, &delta))) {
        http_respond_error(out, 400, "the body must be empty or a decimal amount");
        return;
    }

    kv_bucket_t b;
    if (!kv_open(&b)) {
        http_respond_error(out, 500, "cannot open the store");
        return;
    }
    uint64_t n = 0;
    bool ok;
    if (root) {
        ok = kv_counter(b, KEY, &n);
    } else if (incr) {
        ok = kv_increment(b, KEY, delta, &n);
    } else {
        uint8_t zero[8];
        u64_to_le(0, zero);
        ok = kv_set(b, KEY, strlen(KEY), zero, sizeof zero);
    }
    kv_close(b);
    if (!ok)
        http_respond_error(out, 500, "store error");
    else
        respond_count(out, n);
}

void exports_wasi_http_incoming_handler_handle(http_incoming_t request, http_outparam_t out) {
    http_request_t req;
    if (!http_read_request(request, true, &req)) {
        http_respond_error(out, 400, "cannot read the request");
        return;
    }
    handle(&req, out);
    http_request_free(&req);
}
