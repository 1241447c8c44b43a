#!/bin/sh
# Stand-in for zz-agent, used by smoke-test.sh until the real agent is built.
# Same contract: `zz-agent --cmdline FILE`, identity from the kernel command
# line, dials out to the host alias. It reports what it sees of the guest,
# then sends a tick per 200 ms so the host can tell it is running; it
# reconnects when the link drops (a managed-save restore resets all TCP
# connections) and exits with status 3 when the host sends "exit".

if [ "$1" != --cmdline ] || [ ! -r "$2" ]; then echo "usage: $0 --cmdline FILE" >&2; exit 2; fi

value() {
    # shellcheck disable=SC2013 # the command line is words, not lines
    for word in $(cat "$2"); do
        case "$word" in "$1"=*) echo "${word#*=}"; return ;; esac
    done
}
name=$(value zz.replica "$2")
host=$(value zz.host_alias "$2")
port=$(value zz.smoke_port "$2")
deployment=$(value zz.deployment "$2")
key=$(value zz.key "$2")
if [ -z "$name" ] || [ -z "$host" ] || [ -z "$port" ]; then
    echo "stand-in: missing zz.* on the command line" >&2
    exit 2
fi

sha() { if [ -r "$1" ]; then sha256sum "$1" | cut -d' ' -f1; else echo missing; fi; }

report() {
    routes=$(ip route | tr '\n' ';')
    if [ -e /etc/resolv.conf ]; then dns=yes; else dns=no; fi
    echo "hello name=$name attempt=$1 deployment=$(sha "$deployment") key=$(sha "$key") dns=$dns routes=$routes"
    n=0
    while :; do
        n=$((n + 1))
        echo "tick $n"
        usleep 200000
    done
}

conn=0
while :; do
    conn=$((conn + 1))
    # The reader's status is the pipeline's: 7 means the host asked us to exit.
    report "$conn" | nc "$host" "$port" | {
        while read -r cmd; do [ "$cmd" = exit ] && exit 7; done
        exit 0
    }
    [ $? -eq 7 ] && { echo "stand-in: host asked to exit"; exit 3; }
    usleep 200000
done
