"""Container health check: is a PostgreSQL-wire server answering on the port?

Sends an SSLRequest and expects the one-byte answer every v3 server gives ('S' or 'N').
Standard library only, so the image needs no psql.  Usage: healthcheck.py [PORT] [HOST]
"""

import socket
import struct
import sys

SSL_REQUEST = 80877103


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5433
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(struct.pack("!II", 8, SSL_REQUEST))
            answer = sock.recv(1)
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if answer in (b"S", b"N"):
        return 0
    print(f"unhealthy: unexpected answer {answer!r} to SSLRequest", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
