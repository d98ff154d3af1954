{{/*
Checks that fail rendering with a message naming the value to fix. Included by configmap.yaml,
which every release renders.
*/}}

{{/*
A secret in the config must be one ${VAR} or ${file:/path} reference: the ConfigMap is readable
by anyone who may read ConfigMaps. A ${VAR:-default} is accepted only when the default carries
no credentials (redis_url: no user info; other secrets: an empty default).
Call with (dict "value" v "path" "config.redis_url" "url" true).
*/}}
{{- define "capture-relay.checkSecretReference" -}}
{{- $reference := "^\\$\\{\\s*(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\\s*(:-([^}]*))?\\}$" }}
{{- $hint := printf "put the value in a Secret (existingSecret, or extraEnv with valueFrom.secretKeyRef) and write %s: ${SOME_VAR}, or mount the Secret (extraVolumes) and write ${file:/path/to/it}" .path }}
{{- if not (kindIs "string" .value) }}
{{- fail (printf "%s must be a ${VAR} or ${file:/path} reference, not a literal: the config is stored in a ConfigMap, readable by anyone who can read ConfigMaps; %s" .path $hint) }}
{{- end }}
{{- if not (regexMatch $reference .value) }}
{{- fail (printf "%s must be a ${VAR} or ${file:/path} reference, not a literal: the config is stored in a ConfigMap, readable by anyone who can read ConfigMaps; %s" .path $hint) }}
{{- end }}
{{- $default := regexReplaceAll $reference .value "${3}" }}
{{- if and .url (contains "@" $default) }}
{{- fail (printf "%s: the default of the ${...} reference carries credentials (user info before @), which would be stored in a ConfigMap; %s" .path $hint) }}
{{- end }}
{{- if and (not .url) $default }}
{{- fail (printf "%s: a ${VAR:-default} with a non-empty default puts a literal secret into the ConfigMap; %s" .path $hint) }}
{{- end }}
{{- end }}

{{- define "capture-relay.validateSecrets" -}}
{{- $config := .Values.config | default dict }}
{{- if hasKey $config "redis_url" }}
{{- include "capture-relay.checkSecretReference" (dict "value" $config.redis_url "path" "config.redis_url" "url" true) }}
{{- end }}
{{- $capture := $config.capture }}
{{- if kindIs "map" $capture }}
{{- if hasKey $capture "client_secret" }}
{{- include "capture-relay.checkSecretReference" (dict "value" $capture.client_secret "path" "config.capture.client_secret" "url" false) }}
{{- end }}
{{- $webhooksApi := $capture.webhooks_api }}
{{- if and (kindIs "map" $webhooksApi) (hasKey $webhooksApi "client_secret") }}
{{- include "capture-relay.checkSecretReference" (dict "value" $webhooksApi.client_secret "path" "config.capture.webhooks_api.client_secret" "url" false) }}
{{- end }}
{{- end }}
{{- $sources := $config.sources }}
{{- $legacy := dict }}
{{- if kindIs "map" $sources }}{{ $legacy = $sources.legacy }}{{ end }}
{{- if kindIs "map" $legacy }}
{{- $hashes := $legacy.callback_hashes }}
{{- if kindIs "slice" $hashes }}
{{- range $index, $hash := $hashes }}
{{- include "capture-relay.checkSecretReference" (dict "value" $hash "path" (printf "config.sources.legacy.callback_hashes[%d]" $index) "url" false) }}
{{- end }}
{{- else if not (kindIs "invalid" $hashes) }}
{{- include "capture-relay.checkSecretReference" (dict "value" $hashes "path" "config.sources.legacy.callback_hashes" "url" false) }}
{{- end }}
{{- $basic := $legacy.basic_auth }}
{{- if and (kindIs "map" $basic) (hasKey $basic "password") }}
{{- include "capture-relay.checkSecretReference" (dict "value" $basic.password "path" "config.sources.legacy.basic_auth.password" "url" false) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
extraEnv: a literal value under a name that looks like a secret would sit in the pod spec for
anyone who may read Deployments.
*/}}
{{- define "capture-relay.validateEnv" -}}
{{- range $index, $env := .Values.extraEnv }}
{{- if not (and (kindIs "map" $env) $env.name) }}
{{- fail (printf "extraEnv[%d] must be an EnvVar with a name" $index) }}
{{- end }}
{{- if and (hasKey $env "value") (regexMatch "(?i)(secret|password|passwd|token|credential|private|_hash$|_key$)" $env.name) }}
{{- fail (printf "extraEnv[%d] (%s) looks like a secret but has a literal value: use valueFrom.secretKeyRef, or put it in existingSecret" $index $env.name) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "capture-relay.validateAutoscaling" -}}
{{- $scaling := .Values.worker.autoscaling }}
{{- if eq $scaling.mode "keda" }}
{{- $keda := $scaling.keda }}
{{- if and (eq $keda.type "redis") (not (or $keda.address $keda.addressFromEnv)) }}
{{- fail "worker.autoscaling.mode is keda: set worker.autoscaling.keda.address (host:port of Redis) or worker.autoscaling.keda.addressFromEnv (an environment variable of the worker holding host:port)" }}
{{- end }}
{{- if and $keda.address $keda.addressFromEnv }}
{{- fail "worker.autoscaling.keda: set address or addressFromEnv, not both" }}
{{- end }}
{{- end }}
{{- if and (ne $scaling.mode "none") (gt (int $scaling.minReplicas) (int $scaling.maxReplicas)) }}
{{- fail (printf "worker.autoscaling.minReplicas (%d) is above maxReplicas (%d)" (int $scaling.minReplicas) (int $scaling.maxReplicas)) }}
{{- end }}
{{- if and (eq $scaling.mode "hpa") (lt (int $scaling.minReplicas) 1) }}
{{- fail "worker.autoscaling.mode hpa needs minReplicas >= 1; scaling workers to zero needs mode keda" }}
{{- end }}
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail (printf "api.autoscaling.minReplicas (%d) is above maxReplicas (%d)" (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}

{{- define "capture-relay.validatePdb" -}}
{{- range $component := list "api" "worker" }}
{{- $pdb := (index $.Values $component).pdb }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) }}
{{- fail (printf "%s.pdb is enabled: set maxUnavailable or minAvailable" $component) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "capture-relay.validate" -}}
{{- include "capture-relay.validateSecrets" . }}
{{- include "capture-relay.validateEnv" . }}
{{- include "capture-relay.validateAutoscaling" . }}
{{- include "capture-relay.validatePdb" . }}
{{- end }}
