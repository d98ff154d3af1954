{{/*
Names, labels and the values the chart reads out of the capture-relay config.
*/}}

{{- define "capture-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: <release>-<chart>, or <release> when it contains the chart
name. Component suffixes ("-api", "-worker", ...) are added to it, so it is cut to 50
characters to leave them room within 63.
*/}}
{{- define "capture-relay.fullname" -}}
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

{{- define "capture-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "api").
*/}}
{{- define "capture-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capture-relay.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The recommended labels of every object. Call with (dict "root" $ "component" "api").
*/}}
{{- define "capture-relay.labels" -}}
{{ include "capture-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ .root.Chart.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "capture-relay.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
metadata: name, namespace and labels. Call with (dict "root" $ "component" "api" "name" "x").
*/}}
{{- define "capture-relay.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "capture-relay.labels" . | nindent 2 }}
{{- end }}

{{- define "capture-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "capture-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "capture-relay.configMapName" -}}
{{- printf "%s-config" (include "capture-relay.fullname" .) }}
{{- end }}

{{- define "capture-relay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The capture-relay version of the image: image.tag, else the chart's appVersion; empty for an
image pinned by digest alone (its version cannot be known when rendering).
*/}}
{{- define "capture-relay.imageVersion" -}}
{{- if .Values.image.tag }}
{{- .Values.image.tag }}
{{- else if not .Values.image.digest }}
{{- .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/*
"true" when the string given is a semantic version (an optional v, minor and patch may be left
out, as Helm's semver parses it), "" otherwise (latest, main, a commit hash, "").
*/}}
{{- define "capture-relay.isSemver" -}}
{{- $identifier := "(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)" }}
{{- $pattern := printf "^v?(0|[1-9][0-9]*)(\\.(0|[1-9][0-9]*)){0,2}(-%s(\\.%s)*)?(\\+[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*)?$" $identifier $identifier }}
{{- if regexMatch $pattern . }}true{{ end }}
{{- end }}

{{/*
The registration CronJob's name: at most 52 characters, since the Jobs it creates add an
11-character suffix and a Job name becomes a label value (63 at most).
*/}}
{{- define "capture-relay.registrationCronJobName" -}}
{{- printf "%s-register" (include "capture-relay.fullname" . | trunc 43 | trimSuffix "-") }}
{{- end }}

{{/*
One section of the config as a map (empty when absent or null).
*/}}
{{- define "capture-relay.configSection" -}}
{{- $section := index (.root.Values.config | default dict) .key }}
{{- if kindIs "map" $section }}{{ toJson $section }}{{ else }}{}{{ end }}
{{- end }}

{{/*
A port number from the config: a number, or a string of digits. Call with (dict "value" v "key" "config.x").
*/}}
{{- define "capture-relay.portNumber" -}}
{{- $value := .value }}
{{- if kindIs "string" $value }}
{{- if not (regexMatch "^[0-9]{1,5}$" $value) }}
{{- fail (printf "%s must be a literal port number: the chart uses it for container ports and probes" .key) }}
{{- end }}
{{- $value = atoi $value }}
{{- else if not (or (kindIs "float64" $value) (kindIs "int" $value) (kindIs "int64" $value)) }}
{{- fail (printf "%s must be a literal port number: the chart uses it for container ports and probes" .key) }}
{{- end }}
{{- int $value }}
{{- end }}

{{/* config.server.port: the container port named http. */}}
{{- define "capture-relay.httpPort" -}}
{{- $server := include "capture-relay.configSection" (dict "root" . "key" "server") | fromJson }}
{{- include "capture-relay.portNumber" (dict "value" ($server.port | default 8000) "key" "config.server.port") }}
{{- end }}

{{/* config.worker.metrics_port: the worker's container port named metrics. */}}
{{- define "capture-relay.metricsPort" -}}
{{- $worker := include "capture-relay.configSection" (dict "root" . "key" "worker") | fromJson }}
{{- $port := $worker.metrics_port }}
{{- if not $port }}
{{- fail "config.worker.metrics_port must be set (e.g. 9100): the worker's liveness probe and PodMonitor use it" }}
{{- end }}
{{- include "capture-relay.portNumber" (dict "value" $port "key" "config.worker.metrics_port") }}
{{- end }}

{{/* config.ingest.queue: the RQ queue name (default capture-events). */}}
{{- define "capture-relay.queue" -}}
{{- $ingest := include "capture-relay.configSection" (dict "root" . "key" "ingest") | fromJson }}
{{- $ingest.queue | default "capture-events" }}
{{- end }}

{{/*
The Redis list of the queue, as rq names it (rq.Queue(name).key): waiting jobs are its items.
*/}}
{{- define "capture-relay.queueKey" -}}
{{- $queue := include "capture-relay.queue" . }}
{{- if not (regexMatch "^[A-Za-z0-9_.-]{1,64}$" $queue) }}
{{- fail (printf "config.ingest.queue must be a literal queue name (letters, digits, _ . -), not %q: KEDA watches the Redis list named after it" $queue) }}
{{- end }}
{{- printf "rq:queue:%s" $queue }}
{{- end }}

{{/*
config.ingest.job_timeout in whole seconds (rounded up, as the app does): a number of seconds,
or a number followed by ms, s, m, h or d; default 600. Empty when it is not a literal duration
(a ${VAR} reference, for instance).
*/}}
{{- define "capture-relay.jobTimeoutSeconds" -}}
{{- $ingest := include "capture-relay.configSection" (dict "root" . "key" "ingest") | fromJson }}
{{- $raw := $ingest.job_timeout }}
{{- if kindIs "invalid" $raw }}{{ $raw = 600 }}{{ end }}
{{- $number := -1.0 }}
{{- $unit := "" }}
{{- if or (kindIs "float64" $raw) (kindIs "int" $raw) (kindIs "int64" $raw) }}
{{- $number = float64 $raw }}
{{- else if regexMatch "^\\s*[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h|d)?\\s*$" (toString $raw) }}
{{- $text := toString $raw | nospace }}
{{- $number = regexFind "^[0-9]+(\\.[0-9]+)?" $text | float64 }}
{{- $unit = regexFind "(ms|s|m|h|d)$" $text }}
{{- end }}
{{- if ge $number 0.0 }}
{{- $scale := get (dict "" 1.0 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0) $unit }}
{{- max (mulf $number $scale | ceil | int) 1 }}
{{- end }}
{{- end }}

{{/*
The worker's terminationGracePeriodSeconds: at least 30 s above the job timeout, since SIGTERM
lets the current job finish, and the worker then still records its result and deregisters.
*/}}
{{- define "capture-relay.workerGracePeriod" -}}
{{- $explicit := .Values.worker.terminationGracePeriodSeconds }}
{{- $timeout := include "capture-relay.jobTimeoutSeconds" . }}
{{- if kindIs "invalid" $explicit }}
{{- if not $timeout }}
{{- fail "config.ingest.job_timeout is not a literal duration (N, Ns, Nm, Nh or Nd), so the worker's grace period cannot be derived from it: write it literally or set worker.terminationGracePeriodSeconds to at least 30 s above it" }}
{{- end }}
{{- if lt (int .Values.worker.terminationGraceExtraSeconds) 30 }}
{{- fail (printf "worker.terminationGraceExtraSeconds (%d) must be at least 30: a stopping worker finishes its current job first, then records its result and deregisters" (int .Values.worker.terminationGraceExtraSeconds)) }}
{{- end }}
{{- add (int $timeout) .Values.worker.terminationGraceExtraSeconds }}
{{- else }}
{{- if and $timeout (lt (int $explicit) (add (int $timeout) 30)) }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must be at least 30 s above config.ingest.job_timeout (%d s), so %d or more: a stopping worker finishes its current job first, then records its result and deregisters, and Kubernetes kills it when the grace period ends" (int $explicit) (int $timeout) (add (int $timeout) 30)) }}
{{- end }}
{{- int $explicit }}
{{- end }}
{{- end }}

{{/*
The sha256 of the rendered config ConfigMap: a pod annotation, so a config change rolls the pods.
*/}}
{{- define "capture-relay.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
topologySpreadConstraints; those without a labelSelector select the component's pods.
Call with (dict "root" $ "component" "api" "constraints" list).
*/}}
{{- define "capture-relay.topologySpread" -}}
{{- $out := list }}
{{- range .constraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $selector := include "capture-relay.selectorLabels" (dict "root" $.root "component" $.component) | fromYaml }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $out = append $out $constraint }}
{{- end }}
{{- toYaml $out }}
{{- end }}
