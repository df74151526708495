"""A real Kubernetes control plane for development and tests: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler built from Go modules (`make cluster-bins`) and run as local
child processes. See README.md."""

from .bins import ClusterBins, ClusterBinsMissing, LwsBins, bins_dir, find_bins, find_lws
from .pki import CertPair
from .plane import ControlPlane, ControlPlaneError

__all__ = [
    "CertPair",
    "ClusterBins",
    "ClusterBinsMissing",
    "ControlPlane",
    "ControlPlaneError",
    "LwsBins",
    "bins_dir",
    "find_bins",
    "find_lws",
]
