#!/usr/bin/env bash
# Builds the WebAssembly guests (examples/*, execution-agent/tests/components/*)
# from their C sources and writes the .wasm files next to them.
#
#   scripts/build-examples.sh           build and write the committed .wasm files
#   scripts/build-examples.sh --check   build into a temp dir and compare byte for
#                                       byte with the committed files (non-zero exit
#                                       naming the first file that differs)
#
# Installs what is missing: Debian's clang-14, lld-14, wasi-libc and the wasm32
# compiler runtime (apt); wasm-tools and wit-bindgen-cli at pinned versions
# (cargo install --locked); the preview1 -> component adapters from the
# wasi-preview1-component-adapter-provider crate (cargo fetch), checked by hash.
# The build is reproducible: no debug info, no absolute paths, no timestamps.
set -euo pipefail

WASM_TOOLS_VERSION=1.254.2   # wasmparser/wit-parser 0.254, as wasmtime 48 uses
WIT_BINDGEN_VERSION=0.60.0   # wit-bindgen-c on wit-parser 0.254
ADAPTER_VERSION=48.0.8       # wasi-preview1-component-adapter-provider, newest 48.x
ADAPTER_PROXY_SHA256=9d2e1b455ad17ac4e00b3ecf255b88aa2ad44c34170ef87395daf448e374fa2e
ADAPTER_REACTOR_SHA256=134b86dc09c6b62077f2307b96fa8b83b94dc86737bc705ac3dbe27cb107b1f9

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export PATH="$CARGO_HOME/bin:$PATH"

CHECK=0
case "${1:-}" in
"") ;;
--check) CHECK=1 ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

say() { echo "build-examples: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# name | source dir | WIT dir (relative to the root) | world | adapter
COMPONENTS=(
    "guestbook|examples/guestbook|execution-agent/wit|app|proxy"
    "guestbook-v2|examples/guestbook-v2|execution-agent/wit|app|proxy"
    "counter|examples/counter|execution-agent/wit|app|proxy"
    "kv|examples/kv|execution-agent/wit|app|proxy"
    "nondet|execution-agent/tests/components/nondet|execution-agent/wit|app|proxy"
    "memhog|execution-agent/tests/components/memhog|execution-agent/wit|app|proxy"
    "spin|execution-agent/tests/components/spin|execution-agent/wit|app|proxy"
    "outgoing|execution-agent/tests/components/outgoing|execution-agent/wit|app|proxy"
    "forbidden|execution-agent/tests/components/forbidden|execution-agent/wit|app|reactor"
    "wrong-world|execution-agent/tests/components/wrong-world|execution-agent/tests/components/wrong-world/wit|wrong|proxy"
)

# ---- toolchain ----

CLANG_RT=/usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a

install_apt() {
    if command -v clang-14 >/dev/null && command -v wasm-ld-14 >/dev/null &&
        [ -f /usr/lib/wasm32-wasi/libc.a ] && [ -f "$CLANG_RT" ]; then
        return
    fi
    say "installing clang-14, lld-14, wasi-libc, libclang-rt-14-dev-wasm32 (apt)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 >&2
}

# cargo install --locked CRATE@VERSION unless `BIN --version` already names VERSION.
install_cargo() {
    local crate=$1 version=$2 bin=$3
    shift 3
    if command -v "$bin" >/dev/null && "$bin" --version 2>/dev/null | grep -qwF "$version"; then
        return
    fi
    say "installing $crate $version (cargo install --locked)"
    nice -n 10 cargo install --locked "$crate@$version" "$@" >&2
}

# Prints the directory holding the adapter .wasm files, fetching the crate if needed.
adapter_dir() {
    local d
    d=$(ls -d "$CARGO_HOME"/registry/src/*/wasi-preview1-component-adapter-provider-"$ADAPTER_VERSION"/artefacts 2>/dev/null | head -n1 || true)
    if [ -z "$d" ]; then
        say "fetching wasi-preview1-component-adapter-provider $ADAPTER_VERSION (cargo fetch)"
        local scratch
        scratch=$(mktemp -d)
        mkdir -p "$scratch/src"
        : >"$scratch/src/lib.rs"
        cat >"$scratch/Cargo.toml" <<EOF
[package]
name = "zz-adapter-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
EOF
        (cd "$scratch" && cargo fetch -q >&2)
        rm -rf "$scratch"
        d=$(ls -d "$CARGO_HOME"/registry/src/*/wasi-preview1-component-adapter-provider-"$ADAPTER_VERSION"/artefacts 2>/dev/null | head -n1 || true)
        [ -n "$d" ] || die "the adapter crate did not unpack under $CARGO_HOME/registry/src"
    fi
    echo "$d"
}

check_sha() {
    local file=$1 want=$2 got
    got=$(sha256sum "$file" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$file: sha256 $got, expected $want"
}

install_apt
install_cargo wasm-tools "$WASM_TOOLS_VERSION" wasm-tools \
    --no-default-features --features component,validate,print,parse,strip,metadata
install_cargo wit-bindgen-cli "$WIT_BINDGEN_VERSION" wit-bindgen --no-default-features --features c
ADAPTERS=$(adapter_dir)
check_sha "$ADAPTERS/wasi_snapshot_preview1.proxy.wasm" "$ADAPTER_PROXY_SHA256"
check_sha "$ADAPTERS/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER_REACTOR_SHA256"

# ---- build ----

BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
OUT=$BUILD/out

# Everything is built from copies under $BUILD, by relative paths, so nothing
# about this checkout's location can reach the output.
mkdir -p "$BUILD/src/execution-agent/tests" "$OUT"
cp -r "$ROOT/examples" "$BUILD/src/" &&
    cp -r "$ROOT/execution-agent/wit" "$BUILD/src/execution-agent/" &&
    cp -r "$ROOT/execution-agent/tests/components" "$BUILD/src/execution-agent/tests/" ||
    die "cannot copy the sources"

CFLAGS=(
    --target=wasm32-wasi -O2 -mexec-model=reactor
    -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
    -ffile-prefix-map="$BUILD"=. -fno-ident
)
LDFLAGS=(-Wl,--strip-all -Wl,-z,stack-size=262144)

build_one() {
    local name=$1 src=$2 wit=$3 world=$4 adapter=$5
    local bind=bindings/$name
    (
        cd "$BUILD/src"
        wit-bindgen c "$wit" --world "$world" --out-dir "$bind" >"$BUILD/$name.bindgen.log" 2>&1 ||
            { cat "$BUILD/$name.bindgen.log" >&2; die "$name: wit-bindgen failed"; }
        local extra=()
        # Guests of the app world share examples/lib (HTTP plumbing, buffers, JSON).
        [ "$world" = app ] && extra=(-Iexamples/lib examples/lib/http.c examples/lib/buf.c)
        clang-14 "${CFLAGS[@]}" -I"$bind" "${extra[@]}" "$src"/*.c "$bind/$world.c" \
            "$bind/${world}_component_type.o" "${LDFLAGS[@]}" -o "$BUILD/$name.core.wasm"
    )
    wasm-tools component new "$BUILD/$name.core.wasm" \
        --adapt "wasi_snapshot_preview1=$ADAPTERS/wasi_snapshot_preview1.$adapter.wasm" \
        -o "$BUILD/$name.component.wasm"
    wasm-tools strip "$BUILD/$name.component.wasm" -o "$OUT/$name.wasm"
    wasm-tools validate "$OUT/$name.wasm" || die "$name: the component does not validate"
}

status=0
for entry in "${COMPONENTS[@]}"; do
    IFS='|' read -r name src wit world adapter <<<"$entry"
    build_one "$name" "$src" "$wit" "$world" "$adapter"
    dest="$ROOT/$src/$name.wasm"
    if [ "$CHECK" = 1 ]; then
        if [ ! -f "$dest" ]; then
            say "MISSING: $src/$name.wasm is not committed"
            status=1
        elif ! cmp -s "$OUT/$name.wasm" "$dest"; then
            say "DIFFERS: $src/$name.wasm does not match a build from source ($(stat -c %s "$dest") bytes committed, $(stat -c %s "$OUT/$name.wasm") built); run scripts/build-examples.sh and commit"
            status=1
        else
            say "ok: $src/$name.wasm ($(stat -c %s "$dest") bytes)"
        fi
    else
        cp "$OUT/$name.wasm" "$dest"
        say "wrote $src/$name.wasm ($(stat -c %s "$dest") bytes)"
    fi
done
exit $status
