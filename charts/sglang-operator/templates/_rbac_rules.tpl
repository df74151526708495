{{/*
The operator's RBAC rules, written once here; templates/rbac.yaml grants them through one ClusterRole
(cluster-wide) or a Role per watched namespace. Equal to RULES in operator/sglang_operator/rbac.py, which
tests/packaging/test_chart_rbac.py checks. Nothing cluster-scoped: the operator disables kopf's cluster
scanning (no CRD or Namespace access) and runs kopf standalone (no peering objects).
*/}}
{{- define "sglang-operator.rules" -}}
# SGLangModels: kopf lists and watches them and patches its annotations; the operator reads single objects.
- apiGroups: [serving.sglang-operator.io]
  resources: [sglangmodels]
  verbs: [get, list, watch, patch]
# Status is written with a merge patch, from the observed children.
- apiGroups: [serving.sglang-operator.io]
  resources: [sglangmodels/status]
  verbs: [patch]
# Children: read, watched by kopf, created, and replaced (PUT) when an owned field differs. The workload is
# a Deployment, or a LeaderWorkerSet for a model over several nodes (spec.nodes > 1); the one that no longer
# fits is deleted when spec.nodes changes between 1 and more.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, update]
# PodDisruptionBudgets are also deleted when replicas drops to 1.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, delete]
# Each model's NetworkPolicy; deleted when the model sets networkPolicy.enabled to false.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, delete]
# Engine pods are listed (readiness, revision, IP for the engine's /status) and watched, so a crash, an
# image pull error or an unschedulable pod reaches the model's status at once.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Lifecycle events on the models.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# The router (spec.router): its ServiceAccount, and the Role (list and watch pods, which the operator holds
# itself, so no escalate or bind) and RoleBinding its Kubernetes discovery uses; deleted when it is turned off.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, update, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, update, delete]
{{- end }}
