"""An HTTP/1.1 server that misbehaves the ways a flaky world does, for tests/lua/test_http_limits.lua.

Prints its port on the first line of stdout, then serves until stdin closes or it is killed.
Paths:
  /ok            200 "ok" (any method; a request body is read and discarded)
  /size/N        200 with N bytes of "x"
  /loop          302 to itself, forever
  /endless       200 with no length, a body that never ends
  /bomb          200, Content-Encoding: gzip, BOMB_MB MiB of zeros in about a thousandth of that
Every response claims keep-alive (HTTP/1.1 and no "Connection: close") but the connection is
closed right after it, a moment later (0-3 ms, random): a client that reuses it sends its next
request into a closed socket and gets a reset, as from a server behind an idle-timeout proxy.
"""
import random
import socket
import sys
import threading
import time
import zlib

BOMB_MB = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def make_bomb(mib):
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    zeros = bytes(1 << 20)
    parts = [z.compress(zeros) for _ in range(mib)]
    parts.append(z.flush())
    return b"".join(parts)


BOMB = make_bomb(BOMB_MB)


def read_request(conn, buf):
    """One request's head and body from conn; returns (path, rest of buf) or (None, b"")."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(buf) < length:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buf += data
    return path, buf[length:]


def respond(conn, path):
    if path == "/loop":
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
    elif path == "/endless":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        chunk = b"x" * 65536
        while True:
            conn.sendall(chunk)
    elif path == "/bomb":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(BOMB))
        conn.sendall(BOMB)
    elif path.startswith("/size/"):
        n = int(path[6:])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n)
    else:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")


def serve(conn):
    try:
        path, _ = read_request(conn, b"")
        if path is not None:
            respond(conn, path)
            time.sleep(random.random() * 0.003)
    except OSError:
        pass
    finally:
        conn.close()


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), os_exit()), daemon=True).start()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def os_exit():
    import os
    os._exit(0)


if __name__ == "__main__":
    main()
