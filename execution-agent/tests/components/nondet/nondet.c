/*
 * nondet: GET / answers everything a component could read that varies
 * between runs: wall clock, monotonic clock, random bytes and a random u64
 * (the proxy world has no wasi:random/insecure). zz must make each of these
 * the same on every replica. Also writes a line to stdout and to stderr,
 * which must go to the replica's log and not into the answer.
 */
#include <stdio.h>

#include "http.h"

static void hex(buf_t *b, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        buf_putc(b, digits[p[i] >> 4]);
        buf_putc(b, digits[p[i] & 15]);
    }
}

void exports_wasi_http_incoming_handler_handle(http_incoming_t request, http_outparam_t out) {
    wasi_http_types_incoming_request_drop_own(request);

    wasi_clocks_wall_clock_datetime_t wall;
    wasi_clocks_wall_clock_now(&wall);
    wasi_clocks_monotonic_clock_instant_t mono = wasi_clocks_monotonic_clock_now();
    app_list_u8_t bytes;
    wasi_random_random_get_random_bytes(16, &bytes);
    uint64_t r = wasi_random_random_get_random_u64();

    buf_t b = {0};
    buf_puts(&b, "{\"wall\":{\"seconds\":");
    buf_put_u64(&b, wall.seconds);
    buf_puts(&b, ",\"nanoseconds\":");
    buf_put_u64(&b, wall.nanoseconds);
    buf_puts(&b, "},\"monotonic\":");
    buf_put_u64(&b, mono);
    buf_puts(&b, ",\"random_bytes\":\"");
    hex(&b, bytes.ptr, bytes.len);
    buf_puts(&b, "\",\"random_u64\":");
    buf_put_u64(&b, r);
    buf_puts(&b, "}");
    app_list_u8_free(&bytes);

    fputs("nondet: a line on stdout\n", stdout);
    fflush(stdout);
    fputs("nondet: a line on stderr\n", stderr);

    http_respond(out, 200, "application/json", b.ptr, b.len);
    buf_free(&b);
}
