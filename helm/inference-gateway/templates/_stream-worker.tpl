{{/* Stream workers (the event-driven lane): names and the Redis address KEDA reads the lag from. */}}
{{- define "ig.streamWorker.fullname" -}}{{ include "ig.fullname" . }}-stream-worker{{- end }}

{{/* host:port of the Redis the workers use (KEDA's redis-streams trigger wants it apart from the db). */}}
{{- define "ig.streamWorker.redisAddress" -}}
{{- $u := urlParse (include "ig.redis.url" .) -}}
{{- if regexMatch ":[0-9]+$" $u.host }}{{ $u.host }}{{ else }}{{ printf "%s:6379" $u.host }}{{ end -}}
{{- end }}

{{- define "ig.streamWorker.redisDb" -}}
{{- default "0" (trimPrefix "/" (urlParse (include "ig.redis.url" .)).path) -}}
{{- end }}

{{- define "ig.streamWorker.redisTls" -}}
{{- if eq (urlParse (include "ig.redis.url" .)).scheme "rediss" }}true{{ else }}false{{ end -}}
{{- end }}

{{/* Connection metadata shared by both redis-streams triggers. */}}
{{- define "ig.streamWorker.triggerConnection" -}}
address: {{ include "ig.streamWorker.redisAddress" . | quote }}
databaseIndex: {{ include "ig.streamWorker.redisDb" . | quote }}
enableTLS: {{ include "ig.streamWorker.redisTls" . | quote }}
stream: {{ .Values.streamWorker.stream | quote }}
consumerGroup: {{ .Values.streamWorker.group | quote }}
{{- end }}

{{/* Fail early on stream-worker values that cannot work. */}}
{{- define "ig.streamWorker.validate" -}}
{{- $w := .Values.streamWorker }}
{{- if lt (int $w.maxInFlight) (int $w.batchMaxSize) }}
{{- fail "streamWorker.maxInFlight must be >= streamWorker.batchMaxSize: a full batch must fit in the in-flight window." }}
{{- end }}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.minReplicas) (int $w.autoscaling.maxReplicas)) }}
{{- fail "streamWorker.autoscaling.minReplicas must not exceed maxReplicas." }}
{{- end }}
{{- if and $w.autoscaling.enabled (lt (int $w.autoscaling.pendingPerReplica) (int $w.maxInFlight)) }}
{{- fail "streamWorker.autoscaling.pendingPerReplica must be >= streamWorker.maxInFlight: each busy worker holds up to maxInFlight pending entries, so a smaller target would add replicas that the lag does not call for." }}
{{- end }}
{{- end }}
