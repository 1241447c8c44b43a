/* wrong-world: a valid component that exports `answer` and not
 * wasi:http/incoming-handler. Deploying it must fail with 400. */
#include "wrong.h"

uint32_t exports_wrong_answer(void) { return 42; }
