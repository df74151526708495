"""The pod network on one machine, without privileges.

A pod's processes listen on a loopback address of their own, 127.<p>.<a>.<b>: every address of 127.0.0.0/8
is local on Linux, so any user can bind one, and pods share a port (8000) without colliding. A real API
server refuses loopback addresses in Endpoints and EndpointSlices, so on the real control plane a pod
*reports* 10.<p>.<a>.<b> as its podIP: the same host bits under a routable-looking prefix. The two are
one-to-one (`reported_ip` / `local_ip`), so any component maps a podIP back without shared state.

What routes 10.<p>.x.x to the pod then? Adding addresses or a `local` route needs CAP_NET_ADMIN, which a
developer's shell or CI need not have. So the "route" is in user space:
- the Service proxy maps EndpointSlice addresses to the loopback addresses (proxy.py);
- the kubelet API maps `port-forward` to the pod's loopback address (kubeletapi.go);
- every other local process (the operator reading engine `/status`, tests, curl) reaches pod IPs and Service
  cluster IPs through `PodGateway`, a plain HTTP forward proxy named by HTTP_PROXY (with NO_PROXY covering
  the API server), the way a machine outside a cluster reaches it through a proxy.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

REPORTED_FIRST_OCTET = 10
# Service cluster IPs live in 10.96.0.0/12 (the control plane's --service-cluster-ip-range): pod IPs stay out.
SERVICE_OCTETS = range(96, 112)
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
               "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


def reported_ip(local: str) -> str:
    """127.p.a.b (where the pod listens) -> 10.p.a.b (what its status says)."""
    octets = local.split(".")
    if len(octets) != 4 or octets[0] != "127":
        raise ValueError(f"{local!r} is not a pod's loopback address")
    return ".".join([str(REPORTED_FIRST_OCTET), *octets[1:]])


def local_ip(reported: str, prefix: int) -> str | None:
    """10.p.a.b of this cluster (second octet = its prefix) -> 127.p.a.b; anything else -> None."""
    try:
        ip = ipaddress.IPv4Address(reported)
    except ValueError:
        return None
    octets = str(ip).split(".")
    if octets[0] == "127" and octets[1] == str(prefix):
        return str(ip)  # the emulator path reports the loopback address itself
    if octets[0] != str(REPORTED_FIRST_OCTET) or octets[1] != str(prefix):
        return None
    return ".".join(["127", *octets[1:]])


class PodGateway:
    """An HTTP forward proxy (absolute-form requests, as HTTP_PROXY clients send) that reaches pod IPs and
    Service cluster IPs of this cluster; anything else is refused with 502 naming the address."""

    def __init__(self, prefix: int, service_address: Callable[[str, int], tuple[str, int] | None]) -> None:
        self.prefix = prefix
        self.service_address = service_address  # (cluster IP, port) -> the proxy's local listener
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    def resolve(self, host: str, port: int) -> tuple[str, int] | None:
        local = local_ip(host, self.prefix)
        if local is not None:
            return local, port
        return self.service_address(host, port)

    async def start(self, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        target = URL(request.raw_path)
        if not target.is_absolute():
            return web.Response(status=400, text="pod gateway: send absolute-form requests (HTTP_PROXY)\n")
        dest = self.resolve(target.host or "", target.port or 80)
        if dest is None:
            return web.Response(status=502, text=f"pod gateway: {target.host} is not a pod or Service "
                                f"address of this cluster (pods 10.{self.prefix}.x.x)\n")
        upstream = target.with_host(dest[0]).with_port(dest[1])
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Host"] = target.raw_authority
        assert self.session is not None
        try:
            async with self.session.request(request.method, upstream, headers=headers,
                                            data=request.content if request.can_read_body else None,
                                            allow_redirects=False) as resp:
                out = web.StreamResponse(status=resp.status, reason=resp.reason)
                for key, value in resp.headers.items():
                    if key.lower() not in HOP_HEADERS:
                        out.headers.add(key, value)
                await out.prepare(request)
                async for chunk in resp.content.iter_any():
                    await out.write(chunk)
                with contextlib.suppress(ConnectionError):
                    await out.write_eof()
                return out
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return web.Response(status=502, text=f"pod gateway: {target.host}:{target.port}: {exc}\n")
