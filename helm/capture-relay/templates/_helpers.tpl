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

{{/* config.worker.metrics_port: the container port named metrics of both kinds of worker. */}}
{{- define "capture-relay.metricsPort" -}}
{{- $worker := include "capture-relay.configSection" (dict "root" . "key" "worker") | fromJson }}
{{- $port := $worker.metrics_port }}
{{- if not $port }}
{{- fail "config.worker.metrics_port must be set (e.g. 9100): the workers' liveness probes and the PodMonitor use it" }}
{{- end }}
{{- include "capture-relay.portNumber" (dict "value" $port "key" "config.worker.metrics_port") }}
{{- end }}

{{/*
A queue name from the config: config.<section>.queue, or its default. Call with
(dict "root" $ "section" "ingest" "default" "capture-events").
*/}}
{{- define "capture-relay.queueOf" -}}
{{- $section := include "capture-relay.configSection" (dict "root" .root "key" .section) | fromJson }}
{{- $section.queue | default .default }}
{{- end }}

{{/*
The Redis list of a queue, as rq names it (rq.Queue(name).key): waiting jobs are its items.
Call with (dict "root" $ "section" "ingest" "default" "capture-events").
*/}}
{{- define "capture-relay.queueKeyOf" -}}
{{- $queue := include "capture-relay.queueOf" . }}
{{- if not (regexMatch "^[A-Za-z0-9_.-]{1,64}$" $queue) }}
{{- fail (printf "config.%s.queue must be a literal queue name (letters, digits, _ . -), not %q: KEDA watches the Redis list named after it" .section $queue) }}
{{- end }}
{{- printf "rq:queue:%s" $queue }}
{{- end }}

{{/* config.ingest.queue: the events queue (default capture-events). */}}
{{- define "capture-relay.queue" -}}
{{- include "capture-relay.queueOf" (dict "root" . "section" "ingest" "default" "capture-events") }}
{{- end }}

{{/* The Redis list of the events queue. */}}
{{- define "capture-relay.queueKey" -}}
{{- include "capture-relay.queueKeyOf" (dict "root" . "section" "ingest" "default" "capture-events") }}
{{- end }}

{{/*
The two kinds of worker, by their values key, as JSON: the component label, the Deployment
name, the `--queue` argument, and the config section holding the queue and the job timeout
(with their defaults, as in service/settings.py). Call with (dict "root" $ "key" "worker").
*/}}
{{- define "capture-relay.workerKind" -}}
{{- if eq .key "worker" }}
{{- toJson (dict "key" "worker" "component" "worker" "name" (printf "%s-worker" (include "capture-relay.fullname" .root)) "queueArg" "events" "section" "ingest" "defaultQueue" "capture-events" "defaultTimeout" 600) }}
{{- else if eq .key "deliveryWorker" }}
{{- /* The fullname is cut to 50 for suffixes up to 13 characters; this one has 16. */}}
{{- $name := printf "%s-delivery-worker" (include "capture-relay.fullname" .root | trunc 47 | trimSuffix "-") }}
{{- toJson (dict "key" "deliveryWorker" "component" "delivery-worker" "name" $name "queueArg" "deliveries" "section" "delivery" "defaultQueue" "capture-deliveries" "defaultTimeout" 120) }}
{{- else }}
{{- fail (printf "unknown worker kind %q" .key) }}
{{- end }}
{{- end }}

{{/*
A job timeout of the config (config.<section>.job_timeout) in whole seconds, rounded up as the
app does: a number of seconds, or a number followed by ms, s, m, h or d; the default when absent.
Empty when it is not a literal duration (a ${VAR} reference, for instance). Call with
(dict "root" $ "section" "ingest" "default" 600).
*/}}
{{- define "capture-relay.jobTimeoutSeconds" -}}
{{- $section := include "capture-relay.configSection" (dict "root" .root "key" .section) | fromJson }}
{{- $raw := $section.job_timeout }}
{{- if kindIs "invalid" $raw }}{{ $raw = .default }}{{ end }}
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
A worker's terminationGracePeriodSeconds: at least 30 s above the job timeout of its queue
(config.ingest.job_timeout for the events workers, config.delivery.job_timeout for the delivery
workers), since SIGTERM lets the current jobs finish, and the worker then still records their
results and deregisters. Call with (dict "root" $ "key" "worker").
*/}}
{{- define "capture-relay.workerGracePeriod" -}}
{{- $kind := include "capture-relay.workerKind" . | fromJson }}
{{- $values := index .root.Values .key }}
{{- $explicit := $values.terminationGracePeriodSeconds }}
{{- $timeoutKey := printf "config.%s.job_timeout" $kind.section }}
{{- $timeout := include "capture-relay.jobTimeoutSeconds" (dict "root" .root "section" $kind.section "default" (int $kind.defaultTimeout)) }}
{{- if kindIs "invalid" $explicit }}
{{- if not $timeout }}
{{- fail (printf "%s is not a literal duration (N, Ns, Nm, Nh or Nd), so the grace period of the %s pods cannot be derived from it: write it literally or set %s.terminationGracePeriodSeconds to at least 30 s above it" $timeoutKey $kind.component .key) }}
{{- end }}
{{- if lt (int $values.terminationGraceExtraSeconds) 30 }}
{{- fail (printf "%s.terminationGraceExtraSeconds (%d) must be at least 30: a stopping worker finishes its current jobs first, then records their results and deregisters" .key (int $values.terminationGraceExtraSeconds)) }}
{{- end }}
{{- add (int $timeout) $values.terminationGraceExtraSeconds }}
{{- else }}
{{- if and $timeout (lt (int $explicit) (add (int $timeout) 30)) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be at least 30 s above %s (%d s), so %d or more: a stopping worker finishes its current jobs first, then records their results and deregisters, and Kubernetes kills it when the grace period ends" .key (int $explicit) $timeoutKey (int $timeout) (add (int $timeout) 30)) }}
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
