/*
 * guestbook: GET / -> the HTML page; GET /api/entries -> the newest 100
 * entries as JSON, newest first; POST /api/entries {"name","message"} -> 201
 * with the new entry; GET /api/version -> {"version":N} (N is
 * GUESTBOOK_VERSION: examples/guestbook-v2 builds this source as version 2,
 * the upgrade `zz demo --scenario wasm-app` shows).
 *
 * State: key "count" (8-byte little-endian u64, via atomics.increment) is the
 * last id given; key "entry/<id>" holds that entry's JSON object, as served.
 */
#include <string.h>

#include "http.h"
#include "page.h"

#ifndef GUESTBOOK_VERSION
#define GUESTBOOK_VERSION "1"
#endif

#define MAX_NAME 100
#define MAX_MESSAGE 2000
#define LIST_LIMIT 100
/* The list stops before its body passes this, so it goes out as one write of
 * the host's default 1 MiB body chunk (100 entries of escaped text could not). */
#define LIST_BYTES (1000 * 1000)

static const char COUNT[] = "count";

/* "entry/<id>" into `key` (room for 32 bytes); returns its length. */
static size_t entry_key(uint64_t id, char key[32]) {
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + id % 10);
        id /= 10;
    } while (id);
    memcpy(key, "entry/", 6);
    for (size_t i = 0; i < n; i++)
        key[6 + i] = digits[n - 1 - i];
    return 6 + n;
}

static void list_entries(http_outparam_t out) {
    kv_bucket_t b;
    if (!kv_open(&b)) {
        http_respond_error(out, 500, "cannot open the store");
        return;
    }
    uint64_t last;
    if (!kv_counter(b, COUNT, &last)) {
        kv_close(b);
        http_respond_error(out, 500, "store error");
        return;
    }
    buf_t body = {0};
    buf_putc(&body, '[');
    bool first = true, ok = true;
    for (uint64_t id = last, n = 0; id > 0 && n < LIST_LIMIT && body.len < LIST_BYTES; id--, n++) {
        char key[32];
        app_list_u8_t v;
        kv_status_t s = kv_get(b, key, entry_key(id, key), &v);
        if (s == KV_ERROR) {
            ok = false;
            break;
        }
        if (s == KV_MISSING)
            continue;
        if (!first)
            buf_putc(&body, ',');
        buf_put(&body, v.ptr, v.len);
        app_list_u8_free(&v);
        first = false;
    }
    buf_putc(&body, ']');
    kv_close(b);
    if (ok)
        http_respond(out, 200, "application/json", body.ptr, body.len);
    else
        http_respond_error(out, 500, "store error");
    buf_free(&body);
}

static void add_entry(const buf_t *json, http_outparam_t out) {
    static const char *const names[] = {"name", "message"};
    buf_t vals[2] = {{0}, {0}};
    bool present[2];
    if (!json_read_strings(json->ptr, json->len, names, vals, present, 2)) {
        http_respond_error(out, 400, "the body must be a JSON object {\"name\": string, \"message\": string}");
        goto done;
    }
    if (!present[0] || !present[1] || vals[0].len == 0 || vals[1].len == 0) {
        http_respond_error(out, 400, "name and message are required");
        goto done;
    }
    if (!utf8_valid(vals[0].ptr, vals[0].len) || !utf8_valid(vals[1].ptr, vals[1].len)) {
        http_respond_error(out, 400, "name and message must be UTF-8 text without NUL");
        goto done;
    }
    if (vals[0].len > MAX_NAME || vals[1].len > MAX_MESSAGE) {
        http_respond_error(out, 400, "name is limited to 100 bytes, message to 2000");
        goto done;
    }

    kv_bucket_t b;
    if (!kv_open(&b)) {
        http_respond_error(out, 500, "cannot open the store");
        goto done;
    }
    uint64_t id;
    if (!kv_increment(b, COUNT, 1, &id)) {
        kv_close(b);
        http_respond_error(out, 500, "store error");
        goto done;
    }
    wasi_clocks_wall_clock_datetime_t now;
    wasi_clocks_wall_clock_now(&now);

    buf_t entry = {0};
    buf_puts(&entry, "{\"id\":");
    buf_put_u64(&entry, id);
    buf_puts(&entry, ",\"name\":");
    buf_put_json_str(&entry, vals[0].ptr, vals[0].len);
    buf_puts(&entry, ",\"message\":");
    buf_put_json_str(&entry, vals[1].ptr, vals[1].len);
    buf_puts(&entry, ",\"at\":");
    buf_put_u64(&entry, now.seconds);
    buf_putc(&entry, '}');

    char key[32];
    bool ok = kv_set(b, key, entry_key(id, key), entry.ptr, entry.len);
    kv_close(b);
    if (ok)
        http_respond(out, 201, "application/json", entry.ptr, entry.len);
    else
        http_respond_error(out, 500, "store error");
    buf_free(&entry);
done:
    buf_free(&vals[0]);
    buf_free(&vals[1]);
}

static void handle(http_request_t *req, http_outparam_t out) {
    bool get = req->method == WASI_HTTP_TYPES_METHOD_GET;
    if (strcmp(req->path, "/") == 0 || strcmp(req->path, "/index.html") == 0) {
        if (get)
            http_respond(out, 200, "text/html; charset=utf-8", (const uint8_t *)PAGE,
                         sizeof PAGE - 1);
        else
            http_respond_error(out, 405, "method not allowed");
    } else if (strcmp(req->path, "/api/version") == 0) {
        if (get)
            http_respond_str(out, 200, "application/json", "{\"version\":" GUESTBOOK_VERSION "}");
        else
            http_respond_error(out, 405, "method not allowed");
    } else if (strcmp(req->path, "/api/entries") == 0) {
        if (get)
            list_entries(out);
        else if (req->method != WASI_HTTP_TYPES_METHOD_POST)
            http_respond_error(out, 405, "method not allowed");
        else if (req->body_too_large)
            http_respond_error(out, 413, "body too large");
        else
            add_entry(&req->body, out);
    } else {
        http_respond_error(out, 404, "no such route");
    }
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
