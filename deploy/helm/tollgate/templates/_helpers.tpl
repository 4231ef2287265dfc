{{/* Names and labels (the layout `helm create` makes). */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.fullname" -}}
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

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret the pods and the migration Job read their environment from. */}}
{{- define "tollgate.secretName" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecret }}{{ else }}{{ include "tollgate.fullname" . }}{{ end }}
{{- end }}

{{/* The image: the CUDA one when gpu.enabled. */}}
{{- define "tollgate.image" -}}
{{- if .Values.gpu.enabled }}
{{- $repo := default .Values.image.repository .Values.gpu.image.repository }}
{{- $tag := default (printf "%s-cuda" .Chart.AppVersion) .Values.gpu.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The gateway config: .Values.config with the settings the manifests depend on put in by the chart
(the listen addresses match the container ports; the spool is the spool volume).
*/}}
{{- define "tollgate.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $server := default (dict) (get $config "server") }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) }}
{{- if .Values.tls.enabled }}
{{- $_ := set $server "tls" (dict "cert_file" (printf "%s/tls.crt" .Values.tls.mountPath) "key_file" (printf "%s/tls.key" .Values.tls.mountPath)) }}
{{- end }}
{{- $_ := set $config "server" $server }}
{{- $usage := default (dict) (get $config "usage") }}
{{- $_ := set $usage "spool_dir" .Values.spool.mountPath }}
{{- $_ := set $config "usage" $usage }}
{{- if .Values.adminListener.enabled }}
{{- $billing := default (dict) (get $config "billing") }}
{{- $_ := set $billing "admin_listen" (printf "0.0.0.0:%d" (int .Values.adminListener.port)) }}
{{- $_ := set $config "billing" $billing }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Checks across values that Kubernetes would not catch. */}}
{{- define "tollgate.validate" -}}
{{- $server := default (dict) .Values.config.server }}
{{- $drainMs := 30000 }}
{{- if hasKey $server "drain_timeout_ms" }}
{{- $drainMs = int (get $server "drain_timeout_ms") }}
{{- end }}
{{- $drainS := div (add $drainMs 999) 1000 }}
{{- $preStop := int .Values.preStopSleepSeconds }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $need := add $preStop $drainS 38 }}
{{- if lt $preStop 0 }}
{{- fail (printf "preStopSleepSeconds (%d) must be 0 (no hook) or more" $preStop) }}
{{- end }}
{{- if lt $grace $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d s) is too short: it must be at least preStopSleepSeconds (%d s) + config.server.drain_timeout_ms (%d ms, %d s) + 38 s (8 s for calls cancelled after the drain to end, 30 s for the usage flush while PostgreSQL is unreachable) = %d s; Kubernetes would kill the gateway before it has drained and flushed" $grace $preStop $drainMs $drainS $need) }}
{{- end }}
{{- if and (not .Values.existingSecret) (not .Values.secrets.TOLLGATE_DATABASE_URL) }}
{{- fail "secrets.TOLLGATE_DATABASE_URL is required (or existingSecret: a Secret holding TOLLGATE_DATABASE_URL)" }}
{{- end }}
{{- if and .Values.adminListener.enabled (eq (int .Values.adminListener.port) (int .Values.containerPort)) }}
{{- fail "adminListener.port must differ from containerPort" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt and tls.key" }}
{{- end }}
{{- if and .Values.tls.enabled (hasKey $server "tls") }}
{{- fail "set either tls.enabled or config.server.tls, not both (tls.enabled sets config.server.tls to the mounted Secret)" }}
{{- end }}
{{- end }}
