{{/* The endpoint shared by the ServiceMonitor and the PodMonitor: ARGS is (dict "root" $
     "m" .Values.serviceMonitor|podMonitor). The bearer token is the Secret gpulse reads. */}}
{{- define "gpulse.monitorEndpoint" -}}
{{- $v := .root.Values -}}
port: metrics
path: /metrics
scheme: {{ include "gpulse.scheme" .root }}
interval: {{ .m.interval }}
scrapeTimeout: {{ .m.scrapeTimeout }}
{{- if and $v.tls.enabled .m.tlsConfig }}
tlsConfig:
  {{- toYaml .m.tlsConfig | nindent 2 }}
{{- end }}
{{- if $v.bearerToken.enabled }}
authorization:
  type: Bearer
  credentials:
    name: {{ $v.bearerToken.secretName }}
    key: {{ $v.bearerToken.key }}
{{- end }}
{{- with .m.relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .m.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
