{{/*
What every capture-relay pod shares: the config file, /tmp, the environment, security contexts.
*/}}

{{- define "capture-relay.configPath" -}}
/etc/capture-relay/config.yaml
{{- end }}

{{/*
Pod metadata annotations and labels. Call with (dict "root" $ "component" "api" "values" .Values.api).
*/}}
{{- define "capture-relay.podMetadata" -}}
annotations:
  checksum/config: {{ include "capture-relay.configChecksum" .root }}
  {{- with .values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
labels:
  {{- include "capture-relay.labels" . | nindent 2 }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The pod-level fields every capture-relay pod has. Call with (dict "root" $ "values" .Values.api).
*/}}
{{- define "capture-relay.podSpecCommon" -}}
serviceAccountName: {{ include "capture-relay.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountServiceAccountToken }}
{{- /* Service links would put <SERVICE>_PORT variables into the environment; nothing reads them. */}}
enableServiceLinks: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "capture-relay.configMapName" .root }}
  - name: tmp
    emptyDir:
      {{- $tmp := dict }}
      {{- range $key := list "medium" "sizeLimit" }}
      {{- with index $.root.Values.tmpVolume $key }}{{ $_ := set $tmp $key . }}{{ end }}
      {{- end }}
      {{- toYaml $tmp | nindent 6 }}
  {{- with .root.Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The container fields every capture-relay container has (after name and args). Call with $.
*/}}
{{- define "capture-relay.containerCommon" -}}
image: {{ include "capture-relay.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: CAPTURE_RELAY_CONFIG
    value: {{ include "capture-relay.configPath" . }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if or .Values.existingSecret .Values.extraEnvFrom }}
envFrom:
  {{- with .Values.existingSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: {{ include "capture-relay.configPath" . | dir }}
    readOnly: true
  - name: tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The pod template of a registration run (hook Job and CronJob). Call with (dict "root" $ "args" list).
*/}}
{{- define "capture-relay.registrationPod" -}}
{{- $values := .root.Values.registration -}}
metadata:
  {{- include "capture-relay.podMetadata" (dict "root" .root "component" "registration" "values" $values) | nindent 2 }}
spec:
  restartPolicy: Never
  {{- include "capture-relay.podSpecCommon" (dict "root" .root "values" $values) | nindent 2 }}
  containers:
    - name: register
      args:
        {{- toYaml .args | nindent 8 }}
      {{- include "capture-relay.containerCommon" .root | nindent 6 }}
      resources:
        {{- toYaml $values.resources | nindent 8 }}
{{- end }}
