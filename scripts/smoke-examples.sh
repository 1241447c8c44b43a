#!/usr/bin/env bash
# Runs the committed example and test components outside zz, as a check of
# the guests' C: jco (npm) turns each component into JavaScript, its
# preview2-shim serves wasi:http on 127.0.0.1, and wasi:keyvalue is an
# in-memory map (scripts/smoke/kv-*.js; counters 8-byte little-endian, as
# in zz). Then curl drives the routes. Needs node, npm and curl; no zz host.
#
#   scripts/smoke-examples.sh     prints one line per check, then "N passed, N failed"
set -euo pipefail

JCO_VERSION=1.35.0
SHIM_VERSION=0.26.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/zz-wasm-smoke/jco-$JCO_VERSION
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$CACHE/node_modules/.bin/jco" ]; then
    echo "smoke: installing @bytecodealliance/jco $JCO_VERSION (npm)" >&2
    mkdir -p "$CACHE"
    (cd "$CACHE" && npm init -y >/dev/null &&
        npm install --no-audit --no-fund "@bytecodealliance/jco@$JCO_VERSION" \
            "@bytecodealliance/preview2-shim@$SHIM_VERSION" >&2)
fi
ln -s "$CACHE/node_modules" "$WORK/node_modules"
cp "$ROOT"/scripts/smoke/*.js "$ROOT"/scripts/smoke/*.mjs "$WORK/"
echo '{"type":"module"}' >"$WORK/package.json"

# Transpiles and serves component $1 (a path under the root); sets U to its base URL.
serve() {
    local file=$ROOT/$1 name
    name=$(basename "$file" .wasm)
    "$CACHE/node_modules/.bin/jco" transpile "$file" -o "$WORK/out-$name" --name "$name" \
        --map 'wasi:keyvalue/store@0.2.0-draft=../kv-store.js' \
        --map 'wasi:keyvalue/atomics@0.2.0-draft=../kv-atomics.js' >/dev/null
    node "$WORK/serve.mjs" "$WORK/out-$name/$name.js" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PIDS+=($!)
    for _ in $(seq 100); do
        [ -s "$WORK/$name.out" ] && break
        sleep 0.1
    done
    [ -s "$WORK/$name.out" ] || { cat "$WORK/$name.log" >&2; exit 1; }
    U="http://127.0.0.1:$(head -n1 "$WORK/$name.out")"
}

passed=0
failed=0
# expect NAME WANT_STATUS WANT_BODY_REGEX curl-args...
expect() {
    local what=$1 status=$2 body=$3 got
    shift 3
    got=$(curl -s -m 20 -w '\n%{http_code}' "$@") || true
    local code=${got##*$'\n'} text=${got%$'\n'*}
    if [[ "$code" =~ ^($status)$ ]] && [[ "$text" =~ $body ]]; then
        passed=$((passed + 1))
        echo "ok   $what"
    else
        failed=$((failed + 1))
        echo "FAIL $what: got $code ${text:0:200}"
    fi
}

serve examples/counter/counter.wasm
expect "counter starts at 0" 200 '^\{"count":0\}$' "$U/"
expect "counter incr" 200 '^\{"count":1\}$' -X POST "$U/incr"
expect "counter incr 5" 200 '^\{"count":6\}$' -X POST -d 5 "$U/incr"
expect "counter bad amount" 400 'error' -X POST -d x "$U/incr"
expect "counter reset" 200 '^\{"count":0\}$' -X POST "$U/reset"
expect "counter after reset" 200 '^\{"count":0\}$' "$U/?q=1"
expect "counter wrong method" 405 'error' -X DELETE "$U/"

serve examples/kv/kv.wasm
head -c 1048576 /dev/urandom >"$WORK/mib"
head -c 1048577 /dev/urandom >"$WORK/mib1"
expect "kv get missing" 404 'no such key' "$U/a"
expect "kv put" 200 '^$' -X PUT -d hello "$U/a"
expect "kv get" 200 '^hello$' "$U/a"
expect "kv put 1 MiB" 200 '^$' -X PUT --data-binary @"$WORK/mib" "$U/big"
curl -s "$U/big" -o "$WORK/mib.got"
if cmp -s "$WORK/mib" "$WORK/mib.got"; then
    passed=$((passed + 1)); echo "ok   kv get 1 MiB"
else
    failed=$((failed + 1)); echo "FAIL kv get 1 MiB: bytes differ"
fi
expect "kv put over 1 MiB" 413 'error' -X PUT --data-binary @"$WORK/mib1" "$U/big1"
expect "kv delete" 204 '^$' -X DELETE "$U/a"
expect "kv delete missing" 404 'no such key' -X DELETE "$U/a"
expect "kv no key" 404 'no such route' "$U/"
expect "kv wrong method" 405 'error' -X POST "$U/a"

serve examples/guestbook/guestbook.wasm
expect "guestbook page" 200 'api/entries' "$U/"
expect "guestbook empty" 200 '^\[\]$' "$U/api/entries"
expect "guestbook post" 201 '^\{"id":1,"name":"Ann","message":"hi \\u003cb\\u003e \\"q\\"","at":[0-9]+\}$' \
    -X POST -d '{"name":"Ann","message":"hi <b> \"q\""}' "$U/api/entries"
expect "guestbook post, other members skipped" 201 '"id":2' \
    -X POST -d '{"x":[1,{"y":null}],"message":"m","name":"Bob"}' "$U/api/entries"
expect "guestbook list, newest first" 200 '^\[\{"id":2,.*\{"id":1,' "$U/api/entries"
expect "guestbook bad JSON" 400 'error' -X POST -d '{"name":"a"' "$U/api/entries"
expect "guestbook missing field" 400 'required' -X POST -d '{"name":"a"}' "$U/api/entries"
expect "guestbook not UTF-8" 400 'UTF-8' -X POST --data-binary $'{"name":"\xff","message":"m"}' "$U/api/entries"

serve execution-agent/tests/components/nondet/nondet.wasm
expect "nondet" 200 '^\{"wall":\{"seconds":[0-9]+,"nanoseconds":[0-9]+\},"monotonic":[0-9]+,"random_bytes":"[0-9a-f]{32}","random_u64":[0-9]+\}$' "$U/"
if grep -q 'nondet: a line on stdout' "$WORK/nondet.out" && grep -q 'nondet: a line on stderr' "$WORK/nondet.log"; then
    passed=$((passed + 1)); echo "ok   nondet writes stdout and stderr"
else
    failed=$((failed + 1)); echo "FAIL nondet writes stdout and stderr"
fi

# jco has no outgoing-HTTP ban: the request fails for want of a network or succeeds.
serve execution-agent/tests/components/outgoing/outgoing.wasm
expect "outgoing answers" '200|502' '(error-code: |unexpected success)' "$U/"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
