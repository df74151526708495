"""TEST DOUBLE for `sglang-engine serve`: lets the controller, kubelet and proxy be tested in seconds, without
torch. It answers what the kubelet and the tests look at:
  /readyz /livez  200          /whoami  the pod's HOSTNAME          /env/<NAME>  an env var
  /config         the --config file's content (follows the kubelet's atomic ConfigMap swap)
"""

from __future__ import annotations

import argparse
import http.server
import os
import sys
import threading


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("verb")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--probe-port", type=int)
    parser.add_argument("--config")
    args, _ = parser.parse_known_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/readyz", "/livez"):
                body = "ok"
            elif self.path == "/whoami":
                body = os.environ.get("HOSTNAME", "")
            elif self.path.startswith("/env/"):
                body = os.environ.get(self.path[5:], "")
            elif self.path == "/config" and args.config:
                with open(args.config) as f:
                    body = f.read()
            else:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: object) -> None:
            pass

    print(f"fake engine on {args.host}:{args.port} argv={sys.argv[1:]}", flush=True)
    if args.probe_port is not None:  # the same answers on the probe port, as the engine's /livez and /readyz
        probes = http.server.ThreadingHTTPServer((args.host, args.probe_port), Handler)
        threading.Thread(target=probes.serve_forever, daemon=True).start()
    http.server.ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
