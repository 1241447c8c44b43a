#include "http.h"

#include <stdlib.h>
#include <string.h>

/* Drops the error resource a stream error may own. */
static void stream_error_drop(wasi_io_streams_stream_error_t *e) {
    if (e->tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED)
        wasi_io_error_error_drop_own(e->val.last_operation_failed);
}

static char *dup_n(const uint8_t *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p)
        abort();
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Reads the body stream until it closes. false on a stream failure. */
static bool read_body(wasi_http_types_borrow_incoming_request_t req, http_request_t *out) {
    wasi_http_types_own_incoming_body_t body;
    if (!wasi_http_types_method_incoming_request_consume(req, &body))
        return false;
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                     &stream)) {
        wasi_http_types_incoming_body_drop_own(body);
        return false;
    }
    bool ok = true;
    for (;;) {
        app_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(
                wasi_io_streams_borrow_input_stream(stream), 64 * 1024, &chunk, &err)) {
            ok = err.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED;
            stream_error_drop(&err);
            break;
        }
        if (out->body.len + chunk.len > HTTP_MAX_BODY) {
            /* Stop reading: the answer is 413 whatever else was sent. */
            out->body_too_large = true;
            app_list_u8_free(&chunk);
            break;
        }
        buf_put(&out->body, chunk.ptr, chunk.len);
        app_list_u8_free(&chunk);
    }
    /* The stream is a child of the body: it must go before the body is finished. */
    wasi_io_streams_input_stream_drop_own(stream);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
    return ok;
}

bool http_read_request(http_incoming_t req, bool want_body, http_request_t *out) {
    memset(out, 0, sizeof *out);
    wasi_http_types_borrow_incoming_request_t r = wasi_http_types_borrow_incoming_request(req);

    wasi_http_types_method_t m;
    wasi_http_types_method_incoming_request_method(r, &m);
    out->method = m.tag;
    wasi_http_types_method_free(&m);

    app_string_t pq;
    if (wasi_http_types_method_incoming_request_path_with_query(r, &pq)) {
        size_t q = 0;
        while (q < pq.len && pq.ptr[q] != '?')
            q++;
        out->path = q ? dup_n(pq.ptr, q) : dup_n((const uint8_t *)"/", 1);
        out->query = q < pq.len ? dup_n(pq.ptr + q + 1, pq.len - q - 1) : dup_n(NULL, 0);
        app_string_free(&pq);
    } else {
        out->path = dup_n((const uint8_t *)"/", 1);
        out->query = dup_n(NULL, 0);
    }

    bool ok = !want_body || read_body(r, out);
    wasi_http_types_incoming_request_drop_own(req);
    if (!ok)
        http_request_free(out);
    return ok;
}

void http_request_free(http_request_t *r) {
    free(r->path);
    free(r->query);
    buf_free(&r->body);
    memset(r, 0, sizeof *r);
}

/* Writes all of `data`, as much per write as check-write permits. */
static bool write_all(wasi_io_streams_borrow_output_stream_t s, const uint8_t *data, size_t len) {
    wasi_io_streams_stream_error_t err;
    size_t off = 0;
    while (off < len) {
        uint64_t permit;
        if (!wasi_io_streams_method_output_stream_check_write(s, &permit, &err)) {
            stream_error_drop(&err);
            return false;
        }
        if (permit == 0) {
            wasi_io_streams_own_pollable_t p = wasi_io_streams_method_output_stream_subscribe(s);
            wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
            wasi_io_poll_pollable_drop_own(p);
            continue;
        }
        size_t n = len - off < permit ? len - off : (size_t)permit;
        app_list_u8_t chunk = {(uint8_t *)data + off, n};
        if (!wasi_io_streams_method_output_stream_write(s, &chunk, &err)) {
            stream_error_drop(&err);
            return false;
        }
        off += n;
    }
    if (!wasi_io_streams_method_output_stream_blocking_flush(s, &err)) {
        stream_error_drop(&err);
        return false;
    }
    return true;
}

static void respond_error_code(http_outparam_t out) {
    wasi_http_types_result_own_outgoing_response_error_code_t res;
    memset(&res, 0, sizeof res);
    res.is_err = true;
    res.val.err.tag = WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR;
    res.val.err.val.internal_error.is_some = false;
    wasi_http_types_static_response_outparam_set(out, &res);
}

void http_respond(http_outparam_t out, uint16_t status, const char *content_type,
                  const uint8_t *body, size_t len) {
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    if (content_type) {
        wasi_http_types_field_name_t name;
        app_string_set(&name, "content-type");
        wasi_http_types_field_value_t value = {(uint8_t *)content_type, strlen(content_type)};
        wasi_http_types_header_error_t herr;
        if (!wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name,
                                                  &value, &herr)) {
            wasi_http_types_fields_drop_own(headers);
            respond_error_code(out);
            return;
        }
    }
    wasi_http_types_own_outgoing_response_t resp =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t rb = wasi_http_types_borrow_outgoing_response(resp);
    wasi_http_types_own_outgoing_body_t ob;
    if (!wasi_http_types_method_outgoing_response_set_status_code(rb, status) ||
        !wasi_http_types_method_outgoing_response_body(rb, &ob)) {
        wasi_http_types_outgoing_response_drop_own(resp);
        respond_error_code(out);
        return;
    }

    /* Set first, as the wasi:http examples do: the host may read the body only once it has the response. */
    wasi_http_types_result_own_outgoing_response_error_code_t res;
    memset(&res, 0, sizeof res);
    res.is_err = false;
    res.val.ok = resp;
    wasi_http_types_static_response_outparam_set(out, &res);

    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(ob),
                                                    &stream)) {
        wasi_http_types_outgoing_body_drop_own(ob);
        return;
    }
    bool ok = write_all(wasi_io_streams_borrow_output_stream(stream), body, len);
    /* The stream is a child of the body: it must go before the body is finished. */
    wasi_io_streams_output_stream_drop_own(stream);
    if (!ok) {
        /* Dropping an unfinished body tells the host the response is broken. */
        wasi_http_types_outgoing_body_drop_own(ob);
        return;
    }
    wasi_http_types_error_code_t ferr;
    if (!wasi_http_types_static_outgoing_body_finish(ob, NULL, &ferr))
        wasi_http_types_error_code_free(&ferr);
}

void http_respond_str(http_outparam_t out, uint16_t status, const char *content_type,
                      const char *body) {
    http_respond(out, status, content_type, (const uint8_t *)body, strlen(body));
}

void http_respond_error(http_outparam_t out, uint16_t status, const char *msg) {
    buf_t b = {0};
    buf_puts(&b, "{\"error\":");
    buf_put_json_str(&b, (const uint8_t *)msg, strlen(msg));
    buf_putc(&b, '}');
    http_respond(out, status, "application/json", b.ptr, b.len);
    buf_free(&b);
}

/* ---- wasi:keyvalue ---- */

bool kv_open(kv_bucket_t *out) {
    app_string_t id;
    app_string_set(&id, "default");
    wasi_keyvalue_store_error_t err;
    if (!wasi_keyvalue_store_open(&id, out, &err)) {
        wasi_keyvalue_store_error_free(&err);
        return false;
    }
    return true;
}

void kv_close(kv_bucket_t b) { wasi_keyvalue_store_bucket_drop_own(b); }

static app_string_t key_str(const char *key, size_t len) {
    app_string_t s = {(uint8_t *)key, len};
    return s;
}

kv_status_t kv_get(kv_bucket_t b, const char *key, size_t key_len, app_list_u8_t *value) {
    app_string_t k = key_str(key, key_len);
    app_option_list_u8_t got;
    wasi_keyvalue_store_error_t err;
    if (!wasi_keyvalue_store_method_bucket_get(wasi_keyvalue_store_borrow_bucket(b), &k, &got,
                                               &err)) {
        wasi_keyvalue_store_error_free(&err);
        return KV_ERROR;
    }
    if (!got.is_some)
        return KV_MISSING;
    *value = got.val;
    return KV_OK;
}

bool kv_set(kv_bucket_t b, const char *key, size_t key_len, const uint8_t *value, size_t len) {
    app_string_t k = key_str(key, key_len);
    app_list_u8_t v = {(uint8_t *)value, len};
    wasi_keyvalue_store_error_t err;
    if (!wasi_keyvalue_store_method_bucket_set(wasi_keyvalue_store_borrow_bucket(b), &k, &v, &err)) {
        wasi_keyvalue_store_error_free(&err);
        return false;
    }
    return true;
}

kv_status_t kv_delete(kv_bucket_t b, const char *key, size_t key_len) {
    app_string_t k = key_str(key, key_len);
    wasi_keyvalue_store_borrow_bucket_t bb = wasi_keyvalue_store_borrow_bucket(b);
    wasi_keyvalue_store_error_t err;
    bool exists;
    if (!wasi_keyvalue_store_method_bucket_exists(bb, &k, &exists, &err)) {
        wasi_keyvalue_store_error_free(&err);
        return KV_ERROR;
    }
    if (!exists)
        return KV_MISSING;
    if (!wasi_keyvalue_store_method_bucket_delete(bb, &k, &err)) {
        wasi_keyvalue_store_error_free(&err);
        return KV_ERROR;
    }
    return KV_OK;
}

bool kv_increment(kv_bucket_t b, const char *key, uint64_t delta, uint64_t *now) {
    app_string_t k = key_str(key, strlen(key));
    wasi_keyvalue_atomics_error_t err;
    if (!wasi_keyvalue_atomics_increment(wasi_keyvalue_store_borrow_bucket(b), &k, delta, now,
                                         &err)) {
        wasi_keyvalue_atomics_error_free(&err);
        return false;
    }
    return true;
}

bool kv_counter(kv_bucket_t b, const char *key, uint64_t *now) {
    app_list_u8_t v;
    switch (kv_get(b, key, strlen(key), &v)) {
    case KV_MISSING:
        *now = 0;
        return true;
    case KV_ERROR:
        return false;
    case KV_OK:
        break;
    }
    bool ok = u64_from_le(v.ptr, v.len, now);
    app_list_u8_free(&v);
    return ok;
}
