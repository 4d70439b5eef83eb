{{/* Names, labels and small switches shared by the templates. */}}

{{- define "gpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: "gpulse" for a release named gpulse, else RELEASE-gpulse. */}}
{{- define "gpulse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpulse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* gpulse-job: the scrape job name, read by the monitors' jobLabel (the alerts match
     up{job=~"gpulse.*"}). */}}
{{- define "gpulse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
gpulse-job: {{ .Values.scrapeJob | quote }}
{{- end -}}

{{- define "gpulse.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Any Kubernetes API access: only then a ServiceAccount and RBAC exist. */}}
{{- define "gpulse.rbacEnabled" -}}
{{- if or .Values.rbac.leases.enabled .Values.nodeCondition.enabled -}}true{{- end -}}
{{- end -}}

{{- define "gpulse.serviceAccountName" -}}
{{- default (include "gpulse.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Runs as root: the kmsg switch, or attribution with a root-only socket. */}}
{{- define "gpulse.root" -}}
{{- if or .Values.kmsg.enabled (and .Values.attribution.enabled .Values.attribution.runAsRoot) -}}true{{- end -}}
{{- end -}}

{{- define "gpulse.scheme" -}}
{{- if .Values.tls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}
