{{/*
Pieces of HorizontalPodAutoscalers and PodDisruptionBudgets shared by the api and the workers.
*/}}

{{/*
HPA metrics from targetCPUUtilizationPercentage / targetMemoryUtilizationPercentage.
*/}}
{{- define "capture-relay.resourceMetrics" -}}
{{- $metrics := list }}
{{- range $resource, $key := dict "cpu" "targetCPUUtilizationPercentage" "memory" "targetMemoryUtilizationPercentage" }}
{{- $target := index $ $key }}
{{- if not (kindIs "invalid" $target) }}
{{- $metrics = append $metrics (dict "type" "Resource" "resource" (dict "name" $resource "target" (dict "type" "Utilization" "averageUtilization" (int $target)))) }}
{{- end }}
{{- end }}
{{- if not $metrics }}
{{- fail "an HPA needs targetCPUUtilizationPercentage and/or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- toYaml $metrics }}
{{- end }}

{{/*
A policy/v1 PodDisruptionBudget. Call with (dict "root" $ "component" "api" "pdb" .Values.api.pdb),
and "name" when the object name is not <fullname>-<component>.
*/}}
{{- define "capture-relay.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- $name := .name | default (printf "%s-%s" (include "capture-relay.fullname" .root) .component) }}
  {{- include "capture-relay.metadata" (dict "root" .root "component" .component "name" $name) | nindent 2 }}
spec:
  {{- /* minAvailable, when set, wins: a PDB takes only one of the two. */}}
  {{- if not (kindIs "invalid" .pdb.minAvailable) }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- end }}
  {{- /* The field exists from Kubernetes 1.26 (beta, on by default, in 1.27). */}}
  {{- if and .pdb.unhealthyPodEvictionPolicy (semverCompare ">=1.26.0-0" .root.Capabilities.KubeVersion.Version) }}
  unhealthyPodEvictionPolicy: {{ .pdb.unhealthyPodEvictionPolicy }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "capture-relay.selectorLabels" . | nindent 6 }}
{{- end }}
