{{/*
The chart's name, and the full name of this release's objects (at most 63
characters, as DNS labels require).
*/}}
{{- define "zimmer-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zimmer-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels every object carries; the selector labels are a subset. */}}
{{- define "zimmer-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "zimmer-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "zimmer-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zimmer-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Fixed paths inside the sidecar container. */}}
{{- define "zimmer-sidecar.configDir" -}}/etc/zimmer-sidecar{{- end }}
{{- define "zimmer-sidecar.secretDir" -}}/run/secrets/zimmer-sidecar{{- end }}
{{- define "zimmer-sidecar.dataDir" -}}/var/lib/zimmer-sidecar{{- end }}

{{/* The Secret mounted at secretDir: the user's, or the chart's own. */}}
{{- define "zimmer-sidecar.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "zimmer-sidecar.fullname" . }}
{{- end }}
{{- end }}

{{/* The state volume's claim: the user's, or the chart's own. */}}
{{- define "zimmer-sidecar.claimName" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else }}
{{- printf "%s-data" (include "zimmer-sidecar.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Checks of values that would render a deployment that cannot work. Each
fails the render with the reason and the fix.
*/}}
{{- define "zimmer-sidecar.validate" -}}
{{- $v := .Values }}
{{- $backend := $v.ledger.backend }}
{{- $replicas := int $v.replicas }}
{{- $rwx := has "ReadWriteMany" $v.persistence.accessModes }}
{{- if not (has $backend (list "bolt" "postgres")) }}
{{- fail (printf "ledger.backend must be \"bolt\" or \"postgres\" (got %q)" $backend) }}
{{- end }}
{{- if and (gt $replicas 1) (ne $backend "postgres") }}
{{- fail (printf "%s (got replicas=%d with ledger.backend=%s): %s%s"
    "replicas > 1 requires ledger.backend=postgres" $replicas $backend
    "the bolt ledger is one file that one process may open, "
    "so replicas would each keep their own balances; see docs/postgres.md") }}
{{- end }}
{{- if and (eq $backend "bolt") (not $v.persistence.enabled) }}
{{- fail (print "ledger.backend=bolt requires persistence.enabled=true: "
    "the ledger must outlive the pod") }}
{{- end }}
{{- if and (eq $backend "postgres") (not $v.ledger.dsnSecret.name) }}
{{- fail (print "ledger.backend=postgres requires ledger.dsnSecret.name: "
    "the Secret holding the DSN") }}
{{- end }}
{{- if and (gt $replicas 1) $v.persistence.enabled (not $rwx) }}
{{- fail (print "replicas > 1 share the state volume: "
    "set persistence.accessModes to [ReadWriteMany], or persistence.enabled=false "
    "when nothing needs it (tls.mode off or files)") }}
{{- end }}
{{- if and (not $v.secret.existingSecret) (not $v.secret.data) }}
{{- fail (print "set secret.existingSecret or secret.data "
    "(e.g. --set secret.data.service-token=...): the sidecar needs the "
    "service token the platform administrator gives you") }}
{{- end }}
{{- if eq (int $v.sidecar.ports.public) (int $v.sidecar.ports.admin) }}
{{- fail "sidecar.ports.public and sidecar.ports.admin must differ" }}
{{- end }}
{{- end }}

{{/*
The rollout strategy: Recreate while the pods cannot overlap (the bolt
ledger's lock, a ReadWriteOnce volume), else a rolling update that keeps
every old pod until its successor is ready.
*/}}
{{- define "zimmer-sidecar.strategy" -}}
{{- $p := .Values.persistence }}
{{- $shared := or (not $p.enabled) (has "ReadWriteMany" $p.accessModes) }}
{{- if and (eq .Values.ledger.backend "postgres") $shared -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- else -}}
type: Recreate
{{- end }}
{{- end }}
