"""The Pod Security Standards' "restricted" profile as a check of a pod spec (Kubernetes 1.35 policy).

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ : every baseline control
plus the restricted ones. `restricted_violations(pod_spec, annotations)` lists what breaks it (empty = ok).
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}
APPARMOR_OK = {None, "RuntimeDefault", "Localhost"}


def _containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    fields = ("initContainers", "containers", "ephemeralContainers")
    return [(f"{field}[{c.get('name')}]", c) for field in fields for c in spec.get(field) or []]


def _baseline_context(where: str, ctx: dict[str, Any]) -> list[str]:
    """Controls shared by the pod's and each container's securityContext."""
    out = []
    if (ctx.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"{where}: windowsOptions.hostProcess")
    selinux = ctx.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        out.append(f"{where}: seLinuxOptions {selinux}")
    if (ctx.get("appArmorProfile") or {}).get("type") not in APPARMOR_OK:
        out.append(f"{where}: appArmorProfile {ctx['appArmorProfile']}")
    seccomp = (ctx.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_OK:
        out.append(f"{where}: seccompProfile.type {seccomp}")
    if ctx.get("runAsNonRoot") is False:
        out.append(f"{where}: runAsNonRoot false")
    if ctx.get("runAsUser") == 0:
        out.append(f"{where}: runAsUser 0")
    return out


def restricted_violations(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    out: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"pod: {flag}")
    pod_ctx = spec.get("securityContext") or {}
    out += _baseline_context("pod", pod_ctx)
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"pod: sysctl {sysctl.get('name')}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {volume.get('name')}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"annotation {key}: {value}")
    for where, container in _containers(spec):
        ctx = container.get("securityContext") or {}
        out += _baseline_context(where, ctx)
        if ctx.get("privileged"):
            out.append(f"{where}: privileged")
        if ctx.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount {ctx['procMount']}")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{where}: capabilities.add {caps['add']}")
        # Non-root and seccomp: set on the container, or inherited from the pod.
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            out.append(f"{where}: runAsNonRoot not true (pod or container)")
        if (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type") not in SECCOMP_OK:
            out.append(f"{where}: seccompProfile not RuntimeDefault/Localhost (pod or container)")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
    return out
