/*
 * forbidden: a wasi:http handler that also opens a file, so the component
 * (built with the preview1 reactor adapter, not the proxy one) imports
 * wasi:filesystem. zz must refuse to deploy it.
 */
#include <stdio.h>

#include "http.h"

void exports_wasi_http_incoming_handler_handle(http_incoming_t request, http_outparam_t out) {
    wasi_http_types_incoming_request_drop_own(request);
    FILE *f = fopen("/etc/hostname", "r");
    if (f) {
        fclose(f);
        http_respond_str(out, 200, "text/plain", "opened a file\n");
    } else {
        http_respond_str(out, 200, "text/plain", "could not open a file\n");
    }
}
