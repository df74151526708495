{{/*
Names and labels, defined once. Every template uses these helpers, never its own spelling.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "sglang-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every resource: fullnameOverride, else <release>-<name>, or just <release> when the
release name already contains the chart name. Truncated to 63 characters (the DNS label limit).
*/}}
{{- define "sglang-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: <name>-<version>. */}}
{{- define "sglang-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource of the release. */}}
{{- define "sglang-operator.labels" -}}
helm.sh/chart: {{ include "sglang-operator.chart" . }}
{{ include "sglang-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sglang-operator
{{- end }}

{{/* Labels that select the operator's pod (immutable in a Deployment: never add to them). */}}
{{- define "sglang-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sglang-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "sglang-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sglang-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "sglang-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The default engine image reference; the tag defaults to the chart's appVersion. */}}
{{- define "sglang-operator.engineImage" -}}
{{- printf "%s:%s" .Values.engine.image.repository (default .Chart.AppVersion .Values.engine.image.tag) }}
{{- end }}

{{/*
SGLANG_OPERATOR_POD_DEFAULTS: engine.podDefaults as compact JSON, empty entries dropped so the operator's own
defaults apply to them.
*/}}
{{- define "sglang-operator.podDefaultsJson" -}}
{{- $defaults := dict }}
{{- range $key, $value := .Values.engine.podDefaults }}
{{- if $value }}
{{- $_ := set $defaults $key $value }}
{{- end }}
{{- end }}
{{- toJson $defaults }}
{{- end }}

{{/*
SGLANG_OPERATOR_NETWORK_POLICY: who may reach each engine's probe port. With allowOperator, the operator's own
pod (the release namespace, by its kubernetes.io/metadata.name label, and the pod's selector labels) first.
*/}}
{{- define "sglang-operator.networkPolicyJson" -}}
{{- $status := .Values.engineNetworkPolicy.statusFrom | default list }}
{{- if .Values.engineNetworkPolicy.allowOperator }}
{{- $self := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace)) "podSelector" (dict "matchLabels" (include "sglang-operator.selectorLabels" . | fromYaml)) }}
{{- $status = prepend $status $self }}
{{- end }}
{{- toJson (dict "statusFrom" $status "metricsFrom" (.Values.engineNetworkPolicy.metricsFrom | default list)) }}
{{- end }}

{{/*
Labels the operator puts on every engine pod and model Service (operator/sglang_operator/labels.py);
the PodMonitor and ServiceMonitor select by them.
*/}}
{{- define "sglang-operator.engineSelectorLabels" -}}
app.kubernetes.io/name: sglang-engine
app.kubernetes.io/managed-by: sglang-operator
{{- end }}

{{/* Where the monitors look for engines: the watched namespaces, or every namespace. */}}
{{- define "sglang-operator.monitorNamespaceSelector" -}}
{{- if .Values.watchNamespaces -}}
matchNames:
  {{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- else -}}
any: true
{{- end }}
{{- end }}
