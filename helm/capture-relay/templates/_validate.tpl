{{/*
Checks that fail rendering with a message naming the value to fix. Included by configmap.yaml,
which every release renders.
*/}}

{{/*
A ${VAR} or ${file:/path} reference, optionally with a :-default: group 1 is the variable (or
file:/path), group 3 the default.
*/}}
{{- define "capture-relay.referencePattern" -}}
^\$\{\s*(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\s*(:-([^}]*))?\}$
{{- end }}

{{/*
Credentials in a literal: a URL with a password in its user info, or a password= parameter.
*/}}
{{- define "capture-relay.credentialsPattern" -}}
(?i)(://[^/@]*:[^@]+@|[?&]password=)
{{- end }}

{{/*
The secret keys of the config that are set, as JSON: {"config.<path>": value}.
*/}}
{{- define "capture-relay.secretConfigValues" -}}
{{- $found := dict }}
{{- $config := .Values.config | default dict }}
{{- if hasKey $config "redis_url" }}{{ $_ := set $found "config.redis_url" $config.redis_url }}{{ end }}
{{- $capture := $config.capture }}
{{- if kindIs "map" $capture }}
{{- if hasKey $capture "client_secret" }}{{ $_ := set $found "config.capture.client_secret" $capture.client_secret }}{{ end }}
{{- $webhooksApi := $capture.webhooks_api }}
{{- if and (kindIs "map" $webhooksApi) (hasKey $webhooksApi "client_secret") }}
{{- $_ := set $found "config.capture.webhooks_api.client_secret" $webhooksApi.client_secret }}
{{- end }}
{{- end }}
{{- $sources := $config.sources }}
{{- $legacy := dict }}
{{- if kindIs "map" $sources }}{{ $legacy = $sources.legacy }}{{ end }}
{{- if kindIs "map" $legacy }}
{{- $hashes := $legacy.callback_hashes }}
{{- if kindIs "slice" $hashes }}
{{- range $index, $hash := $hashes }}
{{- $_ := set $found (printf "config.sources.legacy.callback_hashes[%d]" $index) $hash }}
{{- end }}
{{- else if not (kindIs "invalid" $hashes) }}
{{- $_ := set $found "config.sources.legacy.callback_hashes" $hashes }}
{{- end }}
{{- $basic := $legacy.basic_auth }}
{{- if and (kindIs "map" $basic) (hasKey $basic "password") }}
{{- $_ := set $found "config.sources.legacy.basic_auth.password" $basic.password }}
{{- end }}
{{- end }}
{{- $destinations := $config.destinations }}
{{- if kindIs "map" $destinations }}
{{- range $name, $destination := $destinations }}
{{- if kindIs "map" $destination }}
{{- $signing := $destination.signing_secret }}
{{- if kindIs "slice" $signing }}
{{- range $index, $secret := $signing }}
{{- $_ := set $found (printf "config.destinations.%s.signing_secret[%d]" $name $index) $secret }}
{{- end }}
{{- else if not (kindIs "invalid" $signing) }}
{{- $_ := set $found (printf "config.destinations.%s.signing_secret" $name) $signing }}
{{- end }}
{{- if kindIs "map" $destination.headers }}
{{- range $header, $value := $destination.headers }}
{{- $_ := set $found (printf "config.destinations.%s.headers.%s" $name $header) $value }}
{{- end }}
{{- end }}
{{- /* A database DSN or broker URL carries its credentials (postgres, redis_stream, amqp, nats). */}}
{{- range $key := list "dsn" "url" }}
{{- if and (hasKey $destination $key) (ne (toString $destination.type) "http") }}
{{- $_ := set $found (printf "config.destinations.%s.%s" $name $key) (get $destination $key) }}
{{- end }}
{{- end }}
{{- /* librdkafka properties that hold credentials (sasl.password, ssl.key.password, ...). */}}
{{- if kindIs "map" $destination.options }}
{{- range $option, $value := $destination.options }}
{{- if regexMatch "(?i)(password|secret|token|jaas|private|\\.key$|\\.pem$)" $option }}
{{- $_ := set $found (printf "config.destinations.%s.options.%s" $name $option) $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{/*
A header value may put an authentication scheme before its reference ("Bearer ${CRM_TOKEN}"):
the scheme word is not the secret. This strips it, so that the rest is checked as a reference.
Call with (dict "path" "config.destinations.crm.headers.Authorization" "value" v).
*/}}
{{- define "capture-relay.withoutScheme" -}}
{{- if and (kindIs "string" .value) (regexMatch "^config\\.destinations\\..+\\.headers\\." .path) }}
{{- regexReplaceAll "^[A-Za-z]{1,20} +(\\$\\{)" .value "${1}" }}
{{- else }}
{{- .value }}
{{- end }}
{{- end }}

{{/*
A secret in the config must be one ${VAR} or ${file:/path} reference: the ConfigMap is readable
by anyone who may read ConfigMaps. A ${VAR:-default} is accepted only when the default carries
no credentials (redis_url: no user info and no password= parameter; other secrets: an empty
default). Call with (dict "root" $ "value" v "path" "config.redis_url" "url" true).
*/}}
{{- define "capture-relay.checkSecretReference" -}}
{{- $reference := include "capture-relay.referencePattern" .root }}
{{- $hint := printf "put the value in a Secret (existingSecret, or extraEnv with valueFrom.secretKeyRef) and write %s: ${SOME_VAR}, or mount the Secret (extraVolumes) and write ${file:/path/to/it}" .path }}
{{- if not (kindIs "string" .value) }}
{{- fail (printf "%s must be a ${VAR} or ${file:/path} reference, not a literal: the config is stored in a ConfigMap, readable by anyone who can read ConfigMaps; %s" .path $hint) }}
{{- end }}
{{- if not (regexMatch $reference .value) }}
{{- fail (printf "%s must be a ${VAR} or ${file:/path} reference, not a literal: the config is stored in a ConfigMap, readable by anyone who can read ConfigMaps; %s" .path $hint) }}
{{- end }}
{{- $default := regexReplaceAll $reference .value "${3}" }}
{{- if and .url (or (contains "@" $default) (regexMatch (include "capture-relay.credentialsPattern" .root) $default)) }}
{{- fail (printf "%s: the default of the ${...} reference carries credentials (user info before @, or a password= parameter), which would be stored in a ConfigMap; %s" .path $hint) }}
{{- end }}
{{- if and (not .url) $default }}
{{- fail (printf "%s: a ${VAR:-default} with a non-empty default puts a literal secret into the ConfigMap; %s" .path $hint) }}
{{- end }}
{{- end }}

{{- define "capture-relay.validateSecrets" -}}
{{- range $path, $value := include "capture-relay.secretConfigValues" $ | fromJson }}
{{- if kindIs "string" $value }}{{ $value = include "capture-relay.withoutScheme" (dict "path" $path "value" $value) }}{{ end }}
{{- include "capture-relay.checkSecretReference" (dict "root" $ "value" $value "path" $path "url" (or (eq $path "config.redis_url") (regexMatch "^config\\.destinations\\..+\\.(dsn|url)$" $path))) }}
{{- end }}
{{- end }}

{{/*
extraEnv: a literal value sits in the pod spec for anyone who may read Deployments. Refused when
the name looks like a secret, when a secret key of the config reads the variable (${VAR}), or
when the value itself carries credentials. The messages name the variable, never the value.
*/}}
{{- define "capture-relay.validateEnv" -}}
{{- $reference := include "capture-relay.referencePattern" . }}
{{- $credentials := include "capture-relay.credentialsPattern" . }}
{{- $secretVariables := dict }}
{{- range $path, $value := include "capture-relay.secretConfigValues" . | fromJson }}
{{- if kindIs "string" $value }}{{ $value = include "capture-relay.withoutScheme" (dict "path" $path "value" $value) }}{{ end }}
{{- if and (kindIs "string" $value) (regexMatch $reference $value) }}
{{- $variable := regexReplaceAll $reference $value "${1}" | trim }}
{{- if not (hasPrefix "file:" $variable) }}{{ $_ := set $secretVariables $variable $path }}{{ end }}
{{- end }}
{{- end }}
{{- $hint := "use valueFrom.secretKeyRef, or put it in existingSecret" }}
{{- range $index, $env := .Values.extraEnv }}
{{- if not (and (kindIs "map" $env) $env.name) }}
{{- fail (printf "extraEnv[%d] must be an EnvVar with a name" $index) }}
{{- end }}
{{- if hasKey $env "value" }}
{{- if regexMatch "(?i)(secret|password|passwd|token|credential|private|_hash$|_key$)" $env.name }}
{{- fail (printf "extraEnv[%d] (%s) looks like a secret but has a literal value: %s" $index $env.name $hint) }}
{{- end }}
{{- with get $secretVariables $env.name }}
{{- fail (printf "extraEnv[%d] (%s) has a literal value, but %s reads ${%s}, so it is a secret and would sit in the pod spec: %s" $index $env.name . $env.name $hint) }}
{{- end }}
{{- if regexMatch $credentials (toString $env.value) }}
{{- fail (printf "extraEnv[%d] (%s) has a literal value carrying credentials (a URL with a password, or a password= parameter), which would sit in the pod spec: %s" $index $env.name $hint) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Each kind of worker: never fewer than one (no scale to zero), and bounds in order.
*/}}
{{- define "capture-relay.validateWorkerScaling" -}}
{{- $scaling := (index .root.Values .key).autoscaling }}
{{- $why := "jobs waiting for a retry sit in rq's ScheduledJobRegistry, and only a running worker's scheduler moves them back to the queue (KEDA sees only the queue's length), so without a worker they would never run" }}
{{- if eq $scaling.mode "none" }}
{{- if lt (int (index .root.Values .key).replicaCount) 1 }}
{{- fail (printf "%s.replicaCount must be at least 1: %s" .key $why) }}
{{- end }}
{{- else if lt (int $scaling.minReplicas) 1 }}
{{- fail (printf "%s.autoscaling.minReplicas must be at least 1: %s" .key $why) }}
{{- end }}
{{- if and (ne $scaling.mode "none") (gt (int $scaling.minReplicas) (int $scaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.minReplicas (%d) is above maxReplicas (%d)" .key (int $scaling.minReplicas) (int $scaling.maxReplicas)) }}
{{- end }}
{{- end }}

{{/*
KEDA's Redis connection, worker.autoscaling.keda, which the ScaledObjects of both queues use.
Call with (dict "root" $ "why" "worker.autoscaling.mode is keda").
*/}}
{{- define "capture-relay.validateKedaConnection" -}}
{{- $keda := .root.Values.worker.autoscaling.keda }}
{{- $metadata := $keda.extraMetadata | default dict }}
{{- if eq $keda.type "redis" }}
{{- if not (or $keda.address $keda.addressFromEnv) }}
{{- fail (printf "%s: set worker.autoscaling.keda.address (host:port of Redis) or worker.autoscaling.keda.addressFromEnv (an environment variable of the workers holding host:port); KEDA's Redis connection is set there once for both queues" .why) }}
{{- end }}
{{- if and $keda.address $keda.addressFromEnv }}
{{- fail "worker.autoscaling.keda: set address or addressFromEnv, not both" }}
{{- end }}
{{- else if eq $keda.type "redis-sentinel" }}
{{- if or $keda.address $keda.addressFromEnv }}
{{- fail "worker.autoscaling.keda.type is redis-sentinel: leave address and addressFromEnv empty (they name one Redis server) and list the sentinels in worker.autoscaling.keda.extraMetadata.addresses" }}
{{- end }}
{{- $master := or $metadata.sentinelMaster $metadata.sentinelMasterFromEnv }}
{{- $sentinels := or $metadata.addresses $metadata.addressesFromEnv (and $metadata.hosts $metadata.ports) }}
{{- if not (and $master $sentinels) }}
{{- fail "worker.autoscaling.keda.type is redis-sentinel: set worker.autoscaling.keda.extraMetadata.sentinelMaster (the master set's name, or sentinelMasterFromEnv) and extraMetadata.addresses (\"host:port, host:port\" of the sentinels, or addressesFromEnv, or hosts and ports)" }}
{{- end }}
{{- else }}
{{- fail (printf "worker.autoscaling.keda.type must be redis or redis-sentinel, not %q: capture-relay does not support Redis Cluster" (toString $keda.type)) }}
{{- end }}
{{- end }}

{{- define "capture-relay.validateAutoscaling" -}}
{{- $keda := list }}
{{- range $key := list "worker" "deliveryWorker" }}
{{- include "capture-relay.validateWorkerScaling" (dict "root" $ "key" $key) }}
{{- if eq (index $.Values $key).autoscaling.mode "keda" }}{{ $keda = append $keda $key }}{{ end }}
{{- end }}
{{- with $keda }}
{{- include "capture-relay.validateKedaConnection" (dict "root" $ "why" (printf "%s.autoscaling.mode is keda" (first .))) }}
{{- end }}
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail (printf "api.autoscaling.minReplicas (%d) is above maxReplicas (%d)" (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}

{{/*
The events and the delivery workers each take one queue; on one queue, the events workers would
run deliveries and the delivery workers events, and each Deployment's grace period and
autoscaling would be wrong for half of its jobs.
*/}}
{{- define "capture-relay.validateQueues" -}}
{{- $events := include "capture-relay.queue" . }}
{{- $deliveries := include "capture-relay.queueOf" (dict "root" . "section" "delivery" "default" "capture-deliveries") }}
{{- if eq $events $deliveries }}
{{- fail (printf "config.delivery.queue and config.ingest.queue are both %q: the events and the delivery workers each need a queue of their own" $events) }}
{{- end }}
{{- end }}

{{/*
The fewest pods a component runs, and the value that sets it, as JSON: {"replicas": n, "key": k}.
Call with (dict "root" $ "key" "api"), the component's values key.
*/}}
{{- define "capture-relay.fewestReplicas" -}}
{{- $values := index .root.Values .key }}
{{- $autoscaled := false }}
{{- if eq .key "api" }}{{ $autoscaled = $values.autoscaling.enabled }}{{ else }}{{ $autoscaled = ne $values.autoscaling.mode "none" }}{{ end }}
{{- if $autoscaled }}
{{- toJson (dict "replicas" (int $values.autoscaling.minReplicas) "key" (printf "%s.autoscaling.minReplicas" .key)) }}
{{- else }}
{{- toJson (dict "replicas" (int $values.replicaCount) "key" (printf "%s.replicaCount" .key)) }}
{{- end }}
{{- end }}

{{/*
A PodDisruptionBudget that allows no eviction at all blocks node drains (and cluster upgrades)
forever: minAvailable must stay below the fewest replicas, and maxUnavailable above 0.
*/}}
{{- define "capture-relay.validatePdb" -}}
{{- range $component := list "api" "worker" "deliveryWorker" }}
{{- $pdb := (index $.Values $component).pdb }}
{{- if $pdb.enabled }}
{{- if and (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) }}
{{- fail (printf "%s.pdb is enabled: set maxUnavailable or minAvailable" $component) }}
{{- end }}
{{- $fewest := include "capture-relay.fewestReplicas" (dict "root" $ "key" $component) | fromJson }}
{{- $blocks := printf "the PodDisruptionBudget would never allow an eviction, so node drains and cluster upgrades would wait forever; use %s.pdb.maxUnavailable: 1 (and minAvailable: null)" $component }}
{{- $minAvailable := $pdb.minAvailable }}
{{- if not (kindIs "invalid" $minAvailable) }}
{{- if kindIs "string" $minAvailable }}
{{- if ge (atoi (trimSuffix "%" $minAvailable)) 100 }}
{{- fail (printf "%s.pdb.minAvailable is %s: %s" $component $minAvailable $blocks) }}
{{- end }}
{{- else if ge (int $minAvailable) (int $fewest.replicas) }}
{{- fail (printf "%s.pdb.minAvailable (%d) must be below %s (%d): %s, or raise %s" $component (int $minAvailable) $fewest.key (int $fewest.replicas) $blocks $fewest.key) }}
{{- end }}
{{- else if kindIs "string" $pdb.maxUnavailable }}
{{- if eq (atoi (trimSuffix "%" $pdb.maxUnavailable)) 0 }}
{{- fail (printf "%s.pdb.maxUnavailable is %s: %s" $component $pdb.maxUnavailable $blocks) }}
{{- end }}
{{- else if eq (int $pdb.maxUnavailable) 0 }}
{{- fail (printf "%s.pdb.maxUnavailable is 0: %s" $component $blocks) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The hook Job and CronJob run `capture-relay register`, which capture-relay has from 0.2.0 on.
A version that is not semver (latest, a digest-only image) cannot be checked: NOTES.txt warns.
*/}}
{{- define "capture-relay.validateRegistration" -}}
{{- if .Values.registration.enabled }}
{{- $version := include "capture-relay.imageVersion" . }}
{{- if include "capture-relay.isSemver" $version }}
{{- if lt ((semver $version).Compare (semver "0.2.0")) 0 }}
{{- fail (printf "registration.enabled is true, but capture-relay %s has no `register` command; leave registration.enabled off until a release that has it (0.2.0 or later; the image version is image.tag, else the chart's appVersion)" $version) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
YAML 1.1, which Helm reads values with, takes a bare `on` for the boolean true: a route's
`on: [entityUpdated]` arrives as a key "true", which capture-relay refuses. Say how to write it.
*/}}
{{- define "capture-relay.validateRoutes" -}}
{{- $routes := (.Values.config | default dict).routes }}
{{- if kindIs "slice" $routes }}
{{- range $index, $route := $routes }}
{{- if and (kindIs "map" $route) (hasKey $route "true") }}
{{- fail (printf "config.routes[%d] has a key \"true\": YAML reads a bare on: as the boolean true; quote it, \"on\": [entityUpdated]" $index) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "capture-relay.validate" -}}
{{- include "capture-relay.validateSecrets" . }}
{{- include "capture-relay.validateEnv" . }}
{{- include "capture-relay.validateAutoscaling" . }}
{{- include "capture-relay.validateQueues" . }}
{{- include "capture-relay.validateRoutes" . }}
{{- include "capture-relay.validatePdb" . }}
{{- include "capture-relay.validateRegistration" . }}
{{- end }}
