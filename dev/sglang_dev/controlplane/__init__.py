"""A real Kubernetes control plane for development and tests: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler built from Go modules (`make cluster-bins`) and run as local
child processes. See README.md."""

from .bins import ClusterBins, ClusterBinsMissing, bins_dir, find_bins
from .pki import CertPair
from .plane import ControlPlane, ControlPlaneError

__all__ = [
    "CertPair",
    "ClusterBins",
    "ClusterBinsMissing",
    "ControlPlane",
    "ControlPlaneError",
    "bins_dir",
    "find_bins",
]
