/*
 * memhog: GET / allocates 1 MiB at a time, touching every 64 KiB page, up to
 * 512 MiB. Past the host's memory limit malloc returns NULL and the guest
 * aborts (a wasm trap), so every replica fails at the same point.
 */
#include <stdlib.h>

#include "http.h"

#define STEP ((size_t)1 << 20)
#define STEPS 512
#define PAGE ((size_t)64 << 10)

/* volatile: the allocations must not be optimised away. */
static uint8_t *volatile blocks[STEPS];

void exports_wasi_http_incoming_handler_handle(http_incoming_t request, http_outparam_t out) {
    wasi_http_types_incoming_request_drop_own(request);
    for (size_t i = 0; i < STEPS; i++) {
        uint8_t *p = malloc(STEP);
        if (!p)
            abort();
        for (size_t off = 0; off < STEP; off += PAGE)
            ((volatile uint8_t *)p)[off] = (uint8_t)(i + 1);
        blocks[i] = p;
    }
    http_respond_str(out, 200, "text/plain", "allocated 512 MiB\n");
    for (size_t i = 0; i < STEPS; i++)
        free(blocks[i]);
}
