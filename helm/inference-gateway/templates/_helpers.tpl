{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "ig.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified prefix for every object name. */}}
{{- define "ig.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ig.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "ig.labels" -}}
helm.sh/chart: {{ include "ig.chart" .root }}
{{ include "ig.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "ig.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "ig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ig.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ig.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ig.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ig.gateway.fullname" -}}{{ include "ig.fullname" . }}-gateway{{- end }}
{{- define "ig.triton.fullname" -}}{{ include "ig.fullname" . }}-triton{{- end }}
{{- define "ig.redis.fullname" -}}{{ include "ig.fullname" . }}-redis{{- end }}
{{- define "ig.batch.fullname" -}}{{ include "ig.fullname" . }}-batch{{- end }}
{{- define "ig.spec.fullname" -}}{{ include "ig.fullname" . }}-model-spec{{- end }}

{{- define "ig.gateway.image" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (default .Chart.AppVersion .Values.gateway.image.tag) }}
{{- end }}

{{/* Redis URL without credentials (the password is read from a mounted Secret file). */}}
{{- define "ig.redis.url" -}}
{{- if eq .Values.redis.mode "external" }}
{{- $url := required "redis.external.url is required when redis.mode=external" .Values.redis.external.url }}
{{- if regexMatch "^rediss?://[^/]+/[0-9]+$" $url }}{{ $url }}{{ else }}{{ printf "%s/%d" (trimSuffix "/" $url) (int .Values.redis.db) }}{{ end }}
{{- else }}
{{- printf "redis://%s:6379/%d" (include "ig.redis.fullname" .) (int .Values.redis.db) }}
{{- end }}
{{- end }}

{{/* Name and key of the Secret that holds the Redis password. */}}
{{- define "ig.redis.secretName" -}}
{{- if eq .Values.redis.mode "external" }}
{{- required "redis.external.existingSecret is required when redis.mode=external (the password is never taken from values)" .Values.redis.external.existingSecret }}
{{- else if .Values.redis.internal.auth.existingSecret }}
{{- .Values.redis.internal.auth.existingSecret }}
{{- else }}
{{- include "ig.redis.fullname" . }}-auth
{{- end }}
{{- end }}

{{- define "ig.redis.secretKey" -}}
{{- if eq .Values.redis.mode "external" }}
{{- .Values.redis.external.existingSecretPasswordKey }}
{{- else if .Values.redis.internal.auth.existingSecret }}
{{- .Values.redis.internal.auth.existingSecretPasswordKey }}
{{- else }}
{{- "password" }}
{{- end }}
{{- end }}

{{- define "ig.triton.url" -}}
{{- default (printf "%s:8001" (include "ig.triton.fullname" .)) .Values.gateway.tritonUrl }}
{{- end }}

{{/* Hardened container securityContext shared by every container. */}}
{{- define "ig.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod securityContext; call with (dict "uid" 10001). */}}
{{- define "ig.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Topology spread; call with (dict "root" $ "component" "gateway" "spread" .Values.gateway.topologySpread). */}}
{{- define "ig.topologySpread" -}}
{{- if .spread.enabled -}}
topologySpreadConstraints:
  {{- range $key, $policy := dict "topology.kubernetes.io/zone" .spread.zone "kubernetes.io/hostname" .spread.hostname }}
  - maxSkew: {{ $.spread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $policy }}
    labelSelector:
      matchLabels:
        {{- include "ig.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
    matchLabelKeys: ["pod-template-hash"]
  {{- end }}
{{- end }}
{{- end }}

{{/* Gateway/batch environment: the contract with gateway/config.py (pydantic-settings). */}}
{{- define "ig.gateway.env" -}}
- name: GATEWAY_SPEC_PATH
  value: /etc/gateway/models.yaml
- name: GATEWAY_LOG_LEVEL
  value: {{ .Values.gateway.logLevel | quote }}
- name: GATEWAY_REDIS__URL
  value: {{ include "ig.redis.url" . | quote }}
- name: GATEWAY_REDIS__PASSWORD_FILE
  value: /etc/gateway/redis/password
- name: GATEWAY_TRITON__URL
  value: {{ include "ig.triton.url" . | quote }}
{{- end }}

{{/* Volumes shared by the gateway and batch pods. */}}
{{- define "ig.gateway.volumes" -}}
- name: model-spec
  configMap:
    name: {{ include "ig.spec.fullname" . }}
- name: redis-password
  secret:
    secretName: {{ include "ig.redis.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "ig.redis.secretKey" . }}
        path: password
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "ig.gateway.volumeMounts" -}}
- name: model-spec
  mountPath: /etc/gateway/models.yaml
  subPath: models.yaml
  readOnly: true
- name: redis-password
  mountPath: /etc/gateway/redis
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Fail early on combinations that cannot work. */}}
{{- define "ig.validate" -}}
{{- $ta := .Values.triton.autoscaling }}
{{- if and $ta.enabled $ta.hpa.enabled $ta.keda.enabled }}
{{- fail "triton.autoscaling: hpa.enabled and keda.enabled are both true. KEDA creates and owns its own HPA and rejects a ScaledObject whose workload already has one: enable exactly one of them." }}
{{- end }}
{{- if and $ta.enabled (not $ta.hpa.enabled) (not $ta.keda.enabled) }}
{{- fail "triton.autoscaling.enabled is true but neither hpa.enabled nor keda.enabled is: enable one, or set triton.autoscaling.enabled=false." }}
{{- end }}
{{- if and (eq .Values.triton.modelRepository.source "pvc") (not .Values.triton.modelRepository.pvc.claimName) }}
{{- fail "triton.modelRepository.source=pvc needs triton.modelRepository.pvc.claimName." }}
{{- end }}
{{- if and .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed maxReplicas." }}
{{- end }}
{{- if and $ta.enabled (gt (int $ta.minReplicas) (int $ta.maxReplicas)) }}
{{- fail "triton.autoscaling.minReplicas must not exceed maxReplicas." }}
{{- end }}
{{- if .Values.batch.enabled }}
{{- if gt (int .Values.batch.parallelism) (int .Values.batch.shards) }}
{{- fail "batch.parallelism must not exceed batch.shards." }}
{{- end }}
{{- if not (hasKey .Values.modelSpec.models .Values.batch.model) }}
{{- fail (printf "batch.model %q is not a model in modelSpec.models." .Values.batch.model) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Queue time per successful request (µs), per model, as a ratio of rates over all Triton pods:
  sum by (model) (rate(nv_inference_queue_duration_us[w])) / sum by (model) (rate(nv_inference_request_success[w]))
(Triton's example rule averages per pod, which under-reports and delays scale-up.) A model with
no successes in the window reads 0 rather than NaN. Call with
(dict "root" $ "model" "name-or-empty" "by" "model").
*/}}
{{- define "ig.triton.queueTimeQuery" -}}
{{- $sel := printf "namespace=%q,service=%q" .root.Release.Namespace (include "ig.triton.fullname" .root) -}}
{{- if .model }}{{ $sel = printf "%s,model=%q" $sel .model }}{{ end -}}
{{- $w := .root.Values.triton.autoscaling.queueTime.window -}}
{{- $num := printf "sum by (%s) (rate(nv_inference_queue_duration_us{%s}[%s]))" .by $sel $w -}}
{{- $den := printf "sum by (%s) (rate(nv_inference_request_success{%s}[%s]))" .by $sel $w -}}
{{- printf "(%s / (%s > 0)) or (%s * 0)" $num $den $num -}}
{{- end }}

{{- /* Pods allowed to reach Triton and Redis: the gateway, the batch scoring job, the stream workers. */}}
{{- define "ig.networkPolicy.clients" -}}
- podSelector:
    matchLabels:
      {{- include "ig.selectorLabels" (dict "root" . "component" "gateway") | nindent 6 }}
- podSelector:
    matchLabels:
      {{- include "ig.selectorLabels" (dict "root" . "component" "batch") | nindent 6 }}
{{- if .Values.streamWorker.enabled }}
- podSelector:
    matchLabels:
      {{- include "ig.selectorLabels" (dict "root" . "component" "stream-worker") | nindent 6 }}
{{- end }}
{{- end }}
