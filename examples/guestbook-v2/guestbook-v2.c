/*
 * guestbook-v2: the guestbook, version 2. Same routes and the same keys, so
 * upgrading a deployed guestbook to it keeps every entry; only
 * GET /api/version answers {"version":2}.
 */
#define GUESTBOOK_VERSION "2"
#include "../guestbook/guestbook.c"
