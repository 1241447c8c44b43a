/* spin: GET / never returns; the host's fuel meter must stop it (500). */
#include "http.h"

void exports_wasi_http_incoming_handler_handle(http_incoming_t request, http_outparam_t out) {
    volatile uint64_t counter = 0;
    for (;;)
        counter++;
}
