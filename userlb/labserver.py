"""EDGE: the services one lab real server runs (started inside its namespace).

`python -m userlb.labserver --name rs1` serves, on all addresses:
- HTTP on --http-port (default 8080): `GET /` answers `server=<name>`;
  `GET /bytes/<n>` answers n bytes (for downloads);
- UDP echo on --udp-port (default 7): replies `<name>:` + the datagram;
- TCP echo on --tcp-echo-port (default 7): echoes everything back until EOF.
--serve http|echo|all picks which of them this process runs (the lab runs HTTP
in a process of its own, so a test can stop and restart it). It prints
`ready` on stdout once every socket is bound and runs until killed.
Lab plumbing only; no load-balancing logic.
"""

from __future__ import annotations

import argparse
import http.server
import socket
import socketserver
import sys
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "userlb-lab/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        name = self.server.lab_name
        if self.path.startswith("/bytes/"):
            try:
                size = max(0, min(int(self.path.split("/")[2]), 1 << 30))
            except ValueError:
                self.send_error(400)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Server", name)
            self.end_headers()
            chunk = bytes(65536)
            while size > 0:
                n = min(size, len(chunk))
                self.wfile.write(chunk[:n])
                size -= n
            return
        body = f"server={name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Server", name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args) -> None:
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _udp_echo(sock: socket.socket, name: bytes) -> None:
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(name + b":" + data, peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="userlb.labserver")
    parser.add_argument("--name", required=True)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--udp-port", type=int, default=7)
    parser.add_argument("--tcp-echo-port", type=int, default=7)
    parser.add_argument("--serve", choices=("http", "echo", "all"), default="all")
    args = parser.parse_args(argv)
    threads = []
    if args.serve in ("echo", "all"):
        echo = _EchoServer(("0.0.0.0", args.tcp_echo_port), _EchoHandler)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", args.udp_port))
        threads += [threading.Thread(target=echo.serve_forever, daemon=True),
                    threading.Thread(target=_udp_echo, args=(udp, args.name.encode()),
                                     daemon=True)]
    if args.serve in ("http", "all"):
        httpd = _HTTPServer(("0.0.0.0", args.http_port), _Handler)
        httpd.lab_name = args.name
        threads.append(threading.Thread(target=httpd.serve_forever, daemon=True))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
