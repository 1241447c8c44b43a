/*
 * kv: the built-in kv app's HTTP API over wasi:keyvalue.
 * PUT /{key} (body = value, <= 1 MiB) -> 200; GET /{key} -> 200 value | 404;
 * DELETE /{key} -> 204 | 404. The benchmark's Wasm workload: kept lean.
 */
#include <string.h>

#include "http.h"

#define MAX_KEY 256

static void handle(http_request_t *req, http_outparam_t out) {
    if (req->path[0] != '/') {
        http_respond_error(out, 404, "no such route");
        return;
    }
    const char *key = req->path + 1;
    size_t key_len = strlen(key);
    if (key_len == 0) {
        http_respond_error(out, 404, "no such route");
        return;
    }
    if (key_len > MAX_KEY) {
        http_respond_error(out, 400, "key longer than 256 bytes");
        return;
    }
    uint8_t m = req->method;
    if (m != WASI_HTTP_TYPES_METHOD_PUT && m != WASI_HTTP_TYPES_METHOD_GET &&
        m != WASI_HTTP_TYPES_METHOD_DELETE) {
        http_respond_error(out, 405, "method not allowed");
        return;
    }
    if (m == WASI_HTTP_TYPES_METHOD_PUT && req->body_too_large) {
        http_respond_error(out, 413, "value larger than 1 MiB");
        return;
    }

    kv_bucket_t b;
    if (!kv_open(&b)) {
        http_respond_error(out, 500, "cannot open the store");
        return;
    }
    if (m == WASI_HTTP_TYPES_METHOD_PUT) {
        bool ok = kv_set(b, key, key_len, req->body.ptr, req->body.len);
        kv_close(b);
        if (ok)
            http_respond(out, 200, NULL, NULL, 0);
        else
            http_respond_error(out, 500, "store error");
    } else if (m == WASI_HTTP_TYPES_METHOD_GET) {
        app_list_u8_t v;
        kv_status_t s = kv_get(b, key, key_len, &v);
        kv_close(b);
        if (s == KV_OK) {
            http_respond(out, 200, NULL, v.ptr, v.len);
            app_list_u8_free(&v);
        } else if (s == KV_MISSING) {
            http_respond_error(out, 404, "no such key");
        } else {
            http_respond_error(out, 500, "store error");
        }
    } else {
        kv_status_t s = kv_delete(b, key, key_len);
        kv_close(b);
        if (s == KV_OK)
            http_respond(out, 204, NULL, NULL, 0);
        else if (s == KV_MISSING)
            http_respond_error(out, 404, "no such key");
        else
            http_respond_error(out, 500, "store error");
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
