{{/*
The objects of one kind of worker: the events workers (values key worker, `worker --queue
events`) and the delivery workers (deliveryWorker, `worker --queue deliveries`). Each is one RQ
worker process on one queue per pod; the two differ in their queue, the job timeout their grace
period follows, and their own replicas, resources and autoscaling. Call each with
(dict "root" $ "key" "worker") or (dict "root" $ "key" "deliveryWorker").
*/}}

{{- define "capture-relay.workerDeployment" -}}
{{- $root := .root }}
{{- $kind := include "capture-relay.workerKind" . | fromJson }}
{{- $values := index $root.Values .key }}
{{- $context := dict "root" $root "component" $kind.component "values" $values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "capture-relay.metadata" (dict "root" $root "component" $kind.component "name" $kind.name) | nindent 2 }}
spec:
  {{- if eq $values.autoscaling.mode "none" }}
  replicas: {{ $values.replicaCount }}
  {{- end }}
  {{- with $values.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "capture-relay.selectorLabels" $context | nindent 6 }}
  template:
    metadata:
      {{- include "capture-relay.podMetadata" $context | nindent 6 }}
    spec:
      {{- include "capture-relay.podSpecCommon" $context | nindent 6 }}
      # SIGTERM is a warm shutdown: the worker finishes its current jobs, which may run for
      # config.{{ $kind.section }}.job_timeout, so the grace period is longer than that.
      terminationGracePeriodSeconds: {{ include "capture-relay.workerGracePeriod" . }}
      {{- with $values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- include "capture-relay.topologySpread" (dict "root" $root "component" $kind.component "constraints" .) | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $kind.component }}
          args:
            - worker
            - --queue
            - {{ $kind.queueArg }}
            {{- with $values.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "capture-relay.containerCommon" $root | nindent 10 }}
          ports:
            - name: metrics
              containerPort: {{ include "capture-relay.metricsPort" $root }}
              protocol: TCP
          {{- if $values.livenessProbe.enabled }}
          # /healthz answers 200 while every thread of the worker is alive, has a recent rq
          # heartbeat and has no job stuck past its timeout (which only a restart frees).
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml (omit $values.livenessProbe "enabled") | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
{{- end }}

{{/*
A KEDA ScaledObject on the length of the kind's queue list (rq:queue:<queue>), with a
TriggerAuthentication when KEDA needs Redis credentials. Both queues live in the same Redis, so
KEDA's connection (type, address, databaseIndex, TLS, secrets, extraMetadata) is set once, in
worker.autoscaling.keda; listLength, polling and behavior are each kind's own.
*/}}
{{- define "capture-relay.workerScaledObject" -}}
{{- $root := .root }}
{{- $kind := include "capture-relay.workerKind" . | fromJson }}
{{- $scaling := (index $root.Values .key).autoscaling }}
{{- $keda := $scaling.keda }}
{{- $connection := $root.Values.worker.autoscaling.keda }}
{{- $name := $kind.name }}
{{- $authenticated := or $connection.passwordSecret.name $connection.usernameSecret.name }}
{{- if $authenticated }}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  {{- include "capture-relay.metadata" (dict "root" $root "component" $kind.component "name" $name) | nindent 2 }}
spec:
  secretTargetRef:
    {{- with $connection.passwordSecret.name }}
    - parameter: password
      name: {{ . }}
      key: {{ $connection.passwordSecret.key }}
    {{- end }}
    {{- with $connection.usernameSecret.name }}
    - parameter: username
      name: {{ . }}
      key: {{ $connection.usernameSecret.key }}
    {{- end }}
---
{{- end }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  {{- include "capture-relay.metadata" (dict "root" $root "component" $kind.component "name" $name) | nindent 2 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicaCount: {{ $scaling.minReplicas }}
  maxReplicaCount: {{ $scaling.maxReplicas }}
  pollingInterval: {{ $keda.pollingInterval }}
  cooldownPeriod: {{ $keda.cooldownPeriod }}
  {{- with $keda.behavior }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml . | nindent 8 }}
  {{- end }}
  triggers:
    - type: {{ $connection.type }}
      metadata:
        {{- $metadata := dict
              "listName" (include "capture-relay.queueKeyOf" (dict "root" $root "section" $kind.section "default" $kind.defaultQueue))
              "listLength" (toString (int $keda.listLength))
              "activationListLength" (toString (int $keda.activationListLength))
              "databaseIndex" (toString (int $connection.databaseIndex))
              "enableTLS" (toString $connection.enableTLS)
              "unsafeSsl" (toString $connection.unsafeSsl) }}
        {{- with $connection.address }}{{ $_ := set $metadata "address" . }}{{ end }}
        {{- with $connection.addressFromEnv }}{{ $_ := set $metadata "addressFromEnv" . }}{{ end }}
        {{- range $key, $value := $connection.extraMetadata }}{{ $_ := set $metadata $key (toString $value) }}{{ end }}
        {{- toYaml $metadata | nindent 8 }}
      {{- if $authenticated }}
      authenticationRef:
        name: {{ $name }}
      {{- end }}
{{- end }}

{{/*
A HorizontalPodAutoscaler (autoscaling/v2) on CPU and/or memory.
*/}}
{{- define "capture-relay.workerHpa" -}}
{{- $root := .root }}
{{- $kind := include "capture-relay.workerKind" . | fromJson }}
{{- $scaling := (index $root.Values .key).autoscaling }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  {{- include "capture-relay.metadata" (dict "root" $root "component" $kind.component "name" $kind.name) | nindent 2 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $kind.name }}
  minReplicas: {{ $scaling.minReplicas }}
  maxReplicas: {{ $scaling.maxReplicas }}
  metrics:
    {{- include "capture-relay.resourceMetrics" $scaling.hpa | nindent 4 }}
  {{- with $scaling.hpa.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
