{{- define "meshguard.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meshguard.labels" -}}
app.kubernetes.io/name: meshguard-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "meshguard.selector" -}}
app.kubernetes.io/name: meshguard-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* registry/repository@digest (or :tag), the registry rewritten by global.imageRegistry. */}}
{{- define "meshguard.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $name := .Values.image.repository -}}
{{- if $registry -}}{{- $name = printf "%s/%s" $registry .Values.image.repository -}}{{- end -}}
{{- if and .Values.image.requireDigest (not .Values.image.digest) -}}
{{- fail "image.digest is required in this profile: set it to the digest in the media's MEDIA.json (meshguard-bundle import prints it)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{ $name }}@{{ .Values.image.digest }}
{{- else -}}
{{ $name }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* The tools image (meshguard-bundle, meshguard-license) for the chart's jobs, like the gateway's. */}}
{{- define "meshguard.toolsImage" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $name := .Values.toolsImage.repository -}}
{{- if $registry -}}{{- $name = printf "%s/%s" $registry .Values.toolsImage.repository -}}{{- end -}}
{{- if and .Values.image.requireDigest (not .Values.toolsImage.digest) -}}
{{- fail "toolsImage.digest is required in this profile: set it to the meshguard/tools digest in the media's MEDIA.json" -}}
{{- end -}}
{{- if .Values.toolsImage.digest -}}
{{ $name }}@{{ .Values.toolsImage.digest }}
{{- else -}}
{{ $name }}:{{ .Values.toolsImage.tag }}
{{- end -}}
{{- end -}}

{{/* Stable across pod replacement: the audit key on the volume is bound to it. */}}
{{- define "meshguard.auditOrigin" -}}
{{- .Values.audit.origin | default (printf "%s.%s/meshguard-audit" .Release.Name .Release.Namespace) -}}
{{- end -}}

{{- define "meshguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "meshguard.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}
