/*
 * wasi:http plumbing shared by the zz guests: read a whole request, send a
 * whole response, and reach the app's wasi:keyvalue bucket. Built against the
 * bindings `wit-bindgen c` generates for the zz:app world (app.h).
 */
#ifndef ZZ_HTTP_H
#define ZZ_HTTP_H

#include "app.h"
#include "buf.h"

typedef exports_wasi_http_incoming_handler_own_incoming_request_t http_incoming_t;
typedef exports_wasi_http_incoming_handler_own_response_outparam_t http_outparam_t;

/* The largest request body kept (a kv value's limit). */
#define HTTP_MAX_BODY ((size_t)1 << 20)

typedef struct {
    uint8_t method;      /* WASI_HTTP_TYPES_METHOD_* (OTHER for anything else) */
    char *path;          /* path without the query, NUL-terminated, never empty */
    char *query;         /* after '?', NUL-terminated, "" when there is none */
    buf_t body;
    bool body_too_large; /* more than HTTP_MAX_BODY bytes were sent; body is cut */
} http_request_t;

/*
 * Reads method, path and (when `read_body`) the whole body, then drops the
 * request. false when the request or its body could not be read; the
 * request is dropped and `out` needs no freeing then.
 */
bool http_read_request(http_incoming_t req, bool read_body, http_request_t *out);
void http_request_free(http_request_t *r);

/*
 * Sends a whole response and consumes `out`: the response is set first, then
 * the body is written (check-write permits) and finished. `content_type` may
 * be NULL.
 */
void http_respond(http_outparam_t out, uint16_t status, const char *content_type,
                  const uint8_t *body, size_t len);
void http_respond_str(http_outparam_t out, uint16_t status, const char *content_type,
                      const char *body);
/* {"error": msg} as application/json. */
void http_respond_error(http_outparam_t out, uint16_t status, const char *msg);

/* ---- wasi:keyvalue, bucket "default" ---- */

typedef wasi_keyvalue_store_own_bucket_t kv_bucket_t;

typedef enum { KV_OK, KV_MISSING, KV_ERROR } kv_status_t;

/* Opens the app's bucket; false on error (answer 500). */
bool kv_open(kv_bucket_t *out);
void kv_close(kv_bucket_t b);
/* On KV_OK `*value` holds the bytes; free it with app_list_u8_free. */
kv_status_t kv_get(kv_bucket_t b, const char *key, size_t key_len, app_list_u8_t *value);
bool kv_set(kv_bucket_t b, const char *key, size_t key_len, const uint8_t *value, size_t len);
/* KV_MISSING when the key did not exist (it is then left alone). */
kv_status_t kv_delete(kv_bucket_t b, const char *key, size_t key_len);
/* wasi:keyvalue/atomics.increment; counters are 8-byte little-endian u64. */
bool kv_increment(kv_bucket_t b, const char *key, uint64_t delta, uint64_t *now);
/* Reads a counter: a missing key is 0; false on error or a value not 8 bytes long. */
bool kv_counter(kv_bucket_t b, const char *key, uint64_t *now);

#endif
