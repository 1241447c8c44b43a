/*
 * outgoing: GET / sends GET http://example.com/ through
 * wasi:http/outgoing-handler. zz allows no outgoing HTTP, so the expected
 * answer is 200 naming the error code the host gave (at once from `handle`,
 * or later through the future); any response is 502 "unexpected success".
 */
#include <string.h>

#include "http.h"

/* wasi:http/types error-code case names, in declaration order. */
static const char *const ERROR_NAMES[] = {
    "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
    "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
    "connection-terminated", "connection-timeout", "connection-read-timeout",
    "connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
    "TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
    "HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
    "HTTP-request-header-size", "HTTP-request-trailer-section-size", "HTTP-request-trailer-size",
    "HTTP-response-incomplete", "HTTP-response-header-section-size", "HTTP-response-header-size",
    "HTTP-response-body-size", "HTTP-response-trailer-section-size", "HTTP-response-trailer-size",
    "HTTP-response-transfer-coding", "HTTP-response-content-coding", "HTTP-response-timeout",
    "HTTP-upgrade-failed", "HTTP-protocol-error", "loop-detected", "configuration-error",
    "internal-error",
};

/* Answers 200 "error-code: NAME" and frees the error code. */
static void respond_code(http_outparam_t out, wasi_http_types_error_code_t *code) {
    buf_t b = {0};
    buf_puts(&b, "error-code: ");
    if (code->tag < sizeof ERROR_NAMES / sizeof ERROR_NAMES[0])
        buf_puts(&b, ERROR_NAMES[code->tag]);
    else
        buf_puts(&b, "unknown");
    buf_putc(&b, '\n');
    wasi_http_types_error_code_free(code);
    http_respond(out, 200, "text/plain", b.ptr, b.len);
    buf_free(&b);
}

void exports_wasi_http_incoming_handler_handle(http_incoming_t request, http_outparam_t out) {
    wasi_http_types_incoming_request_drop_own(request);

    wasi_http_types_own_outgoing_request_t req =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t rb = wasi_http_types_borrow_outgoing_request(req);
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    app_string_t authority, path;
    app_string_set(&authority, "example.com");
    app_string_set(&path, "/");
    if (!wasi_http_types_method_outgoing_request_set_scheme(rb, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(rb, &authority) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(rb, &path)) {
        wasi_http_types_outgoing_request_drop_own(req);
        http_respond_str(out, 500, "text/plain", "cannot build the request\n");
        return;
    }

    wasi_http_types_own_future_incoming_response_t fut;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(req, NULL, &fut, &code)) {
        respond_code(out, &code);
        return;
    }

    wasi_http_types_borrow_future_incoming_response_t fb =
        wasi_http_types_borrow_future_incoming_response(fut);
    wasi_http_types_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(fb);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);

    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    bool have = wasi_http_types_method_future_incoming_response_get(fb, &got);
    wasi_http_types_future_incoming_response_drop_own(fut);
    if (!have || got.is_err) {
        http_respond_str(out, 500, "text/plain", "the response future broke its contract\n");
    } else if (got.val.ok.is_err) {
        respond_code(out, &got.val.ok.val.err);
    } else {
        wasi_http_types_incoming_response_drop_own(got.val.ok.val.ok);
        http_respond_str(out, 502, "text/plain", "unexpected success\n");
    }
}
