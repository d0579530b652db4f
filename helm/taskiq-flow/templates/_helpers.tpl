{{/* The chart name, or nameOverride. */}}
{{- define "taskiq-flow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: RELEASE-taskiq-flow, or RELEASE when it already contains the chart name.
Truncated to 52 characters so that suffixed names ("-redis", "-redis-url") stay valid.
*/}}
{{- define "taskiq-flow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "taskiq-flow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object of the release carries. */}}
{{- define "taskiq-flow.labels" -}}
helm.sh/chart: {{ include "taskiq-flow.chart" . }}
app.kubernetes.io/name: {{ include "taskiq-flow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskiq-flow
{{- end }}

{{/* The operator's selector labels (immutable: never add to them). */}}
{{- define "taskiq-flow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskiq-flow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The bundled Redis' selector labels. */}}
{{- define "taskiq-flow.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskiq-flow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "taskiq-flow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "taskiq-flow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image, tag defaulting to the appVersion. */}}
{{- define "taskiq-flow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The bundled Redis: its Service (and StatefulSet) name and its URL Secret. */}}
{{- define "taskiq-flow.redis.fullname" -}}
{{- printf "%s-redis" (include "taskiq-flow.fullname" .) }}
{{- end }}

{{/*
Checks the Redis settings: exactly one of bundled, redis.url, redis.existingSecret.name.
*/}}
{{- define "taskiq-flow.redis.validate" -}}
{{- $r := .Values.redis }}
{{- if and $r.url $r.existingSecret.name }}
{{- fail "redis: set either redis.url or redis.existingSecret.name, not both" }}
{{- end }}
{{- if and $r.bundled.enabled (or $r.url $r.existingSecret.name) }}
{{- fail "redis: an external Redis (redis.url or redis.existingSecret.name) needs redis.bundled.enabled=false" }}
{{- end }}
{{- if not (or $r.bundled.enabled $r.url $r.existingSecret.name) }}
{{- fail "redis: with redis.bundled.enabled=false, set redis.url or redis.existingSecret.name" }}
{{- end }}
{{- end }}

{{/*
The Secret holding the Redis URL, for the operator (env) and the workers (--redis-secret).
*/}}
{{- define "taskiq-flow.redis.secretName" -}}
{{- $r := .Values.redis }}
{{- if $r.existingSecret.name }}
{{- $r.existingSecret.name }}
{{- else if and $r.bundled.enabled $r.bundled.auth.existingSecret }}
{{- $r.bundled.auth.existingSecret }}
{{- else }}
{{- include "taskiq-flow.redis.fullname" . }}
{{- end }}
{{- end }}

{{/* The key of the URL in that Secret. */}}
{{- define "taskiq-flow.redis.secretKey" -}}
{{- $r := .Values.redis }}
{{- if $r.existingSecret.name }}
{{- $r.existingSecret.key }}
{{- else if and $r.bundled.enabled $r.bundled.auth.existingSecret }}
{{- $r.bundled.auth.urlKey }}
{{- else }}
{{- print "url" }}
{{- end }}
{{- end }}

{{/* Whether the chart writes the URL Secret itself (it knows the URL). */}}
{{- define "taskiq-flow.redis.chartOwnsSecret" -}}
{{- $r := .Values.redis }}
{{- if or $r.url (and $r.bundled.enabled (not $r.bundled.auth.existingSecret)) }}true{{ end }}
{{- end }}

{{/* The kopf peering object, used when replicaCount > 1. */}}
{{- define "taskiq-flow.peeringName" -}}
{{- include "taskiq-flow.fullname" . }}
{{- end }}

{{/* `taskiq-flow operator` arguments (the priority is added per pod in HA mode). */}}
{{- define "taskiq-flow.operatorArgs" -}}
{{- $args := list }}
{{- range .Values.watchNamespaces }}
{{- $args = append $args "--namespace" }}
{{- $args = append $args . }}
{{- end }}
{{- if .Values.watchNamespaces }}
{{- /* Exact namespaces: kopf must not list namespaces and CRDs cluster-wide. */}}
{{- $args = append $args "--no-scanning" }}
{{- end }}
{{- $args = append $args "--redis-secret" }}
{{- $args = append $args (printf "%s:%s" (include "taskiq-flow.redis.secretName" .) (include "taskiq-flow.redis.secretKey" .)) }}
{{- $args = append $args "--metrics-port" }}
{{- $args = append $args (toString .Values.metrics.port) }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- $args = append $args "--peering" }}
{{- $args = append $args (include "taskiq-flow.peeringName" .) }}
{{- end }}
{{- range $name, $value := .Values.workerEnv }}
{{- $args = append $args "--worker-env" }}
{{- $args = append $args (printf "%s=%s" $name $value) }}
{{- end }}
{{- range .Values.extraArgs }}
{{- $args = append $args . }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/*
The operator's RBAC rules in the watched namespaces, derived from what the code calls
(docs/install.md explains each). $ is the root context.
*/}}
{{- define "taskiq-flow.namespacedRules" -}}
# kopf watches both kinds and patches them (progress annotations, the finalizer of
# PipelineRuns); the operator reads them (pipelineRef, TTL) and deletes expired runs.
- apiGroups: ["flow.taskiq.dev"]
  resources: ["pipelines"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["flow.taskiq.dev"]
  resources: ["pipelineruns"]
  verbs: ["get", "list", "watch", "patch", "delete"]
# Status is written through the status subresource only.
- apiGroups: ["flow.taskiq.dev"]
  resources: ["pipelines/status", "pipelineruns/status"]
  verbs: ["patch"]
# Worker Deployments are owned by their Pipeline (or inline PipelineRun) with
# blockOwnerDeletion, which clusters enforcing owner-reference permissions allow only to
# whoever may update the owner's finalizers.
- apiGroups: ["flow.taskiq.dev"]
  resources: ["pipelines/finalizers", "pipelineruns/finalizers"]
  verbs: ["update"]
# Worker Deployments: read, create, put back in shape and scale (spec.replicas by patch).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
# Events on Pipelines and PipelineRuns (the operator's and kopf's).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
