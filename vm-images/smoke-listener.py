#!/usr/bin/env python3
"""Host side of smoke-test.sh: where the stand-in agent dials in.

Binds 127.0.0.1:0, writes the port to PORT_FILE, and logs one line per event:
    <epoch_ms> conn=<n> peer=<ip>:<port> open
    <epoch_ms> conn=<n> line <text>
    <epoch_ms> conn=<n> closed
When EXIT_FILE appears it sends "exit" to every open connection and closes
them. It stops itself after MAX_SECONDS so a failed test leaves nothing behind.
"""

import os
import socket
import sys
import threading
import time

port_file, exit_file, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
lock = threading.Lock()
open_conns = {}


def log(conn_id, text):
    with lock:
        print(f"{int(time.time() * 1000)} conn={conn_id} {text}", flush=True)


def serve(conn_id, conn):
    try:
        for raw in conn.makefile("rb"):
            log(conn_id, "line " + raw.decode(errors="replace").rstrip("\n"))
    except OSError:
        pass
    finally:
        with lock:
            open_conns.pop(conn_id, None)
        log(conn_id, "closed")


def exit_watcher(deadline):
    while time.time() < deadline:
        if os.path.exists(exit_file):
            with lock:
                conns = list(open_conns.items())
                open_conns.clear()
            for conn_id, conn in conns:
                try:
                    conn.sendall(b"exit\n")
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                log(conn_id, "sent exit")
            os.unlink(exit_file)
        time.sleep(0.05)
    os._exit(0)


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(tmp, port_file)
    threading.Thread(target=exit_watcher, args=(time.time() + max_seconds,), daemon=True).start()
    conn_id = 0
    while True:
        conn, (host, port) = listener.accept()
        conn_id += 1
        with lock:
            open_conns[conn_id] = conn
        log(conn_id, f"peer={host}:{port} open")
        threading.Thread(target=serve, args=(conn_id, conn), daemon=True).start()


main()
