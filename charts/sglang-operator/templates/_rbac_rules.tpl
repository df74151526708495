{{/*
The operator's RBAC rules, written once here; templates/rbac.yaml grants them through a ClusterRole or Roles.
Keep equal to operator/sglang_operator/rbac.py (a test compares them).
*/}}

{{/* Rules on namespaced resources: granted cluster-wide, or in each watched namespace. */}}
{{- define "sglang-operator.namespacedRules" -}}
# SGLangModels: kopf watches them and patches finalizers and its progress annotations.
- apiGroups: [serving.sglang-operator.io]
  resources: [sglangmodels]
  verbs: [get, list, watch, patch]
# Status is written from observed children.
- apiGroups: [serving.sglang-operator.io]
  resources: [sglangmodels/status]
  verbs: [get, patch]
# Each model's children.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# Engine pods are read for readiness and their /status endpoint address.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# kopf posts events about handler progress to the models.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Cluster-scoped reads, only in cluster-wide mode: kopf notices CRDs being added or changed. */}}
{{- define "sglang-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
