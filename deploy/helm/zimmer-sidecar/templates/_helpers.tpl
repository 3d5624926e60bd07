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
{{- if $v.egress.enabled }}
{{- include "zimmer-sidecar.validateEgress" . }}
{{- end }}
{{- end }}

{{/*
Checks of the egress values, when it is enabled.
*/}}
{{- define "zimmer-sidecar.validateEgress" -}}
{{- $v := .Values }}
{{- $e := $v.egress }}
{{- if regexMatch `(?m)^[ \t]*(\[[ \t]*egress[ \t]*(\]|\.)|egress[ \t]*[.=])` $v.config }}
{{- fail (print "config has an egress section while egress.enabled=true renders one: "
    "set the egress.* values (more [egress] keys go in egress.extraConfig), "
    "or leave egress.enabled=false and write the section yourself") }}
{{- end }}
{{- $port := int (regexFind "[0-9]+$" $e.listen) }}
{{- $taken := list (int $v.sidecar.ports.public) (int $v.sidecar.ports.admin)
    (int $v.sidecar.ports.http) }}
{{- if has $port $taken }}
{{- fail (printf "egress.listen %q takes a port of sidecar.ports: pick another" $e.listen) }}
{{- end }}
{{- range $v.app.env }}
{{- if has .name (list "OPENAI_BASE_URL" "OPENAI_API_KEY") }}
{{- fail (printf "%s %s: with egress.enabled=true the chart sets %s"
    "app.env sets" .name "OPENAI_BASE_URL to the egress and a placeholder OPENAI_API_KEY") }}
{{- end }}
{{- end }}
{{- $own := and (not $e.keysSecret.name) (not $v.secret.existingSecret) }}
{{- if and (eq $e.keySource "static") $own (not (hasKey $v.secret.data $e.keysSecret.key)) }}
{{- fail (printf "%s secret.data.%s (the keys, one per line, e.g. --set-file %s), %s"
    "egress.keySource=static needs" $e.keysSecret.key
    (printf "secret.data.%s=./openai-keys" $e.keysSecret.key)
    "or egress.keysSecret.name: a Secret you manage") }}
{{- end }}
{{- end }}

{{/* Where the sidecar reads the static egress keys. */}}
{{- define "zimmer-sidecar.egressKeysDir" -}}
{{- if .Values.egress.keysSecret.name -}}
/run/secrets/zimmer-sidecar-openai
{{- else -}}
{{ include "zimmer-sidecar.secretDir" . }}
{{- end }}
{{- end }}

{{/*
The [egress] section of the config, from the egress values: loopback
listener, upstream, keys, budget and the outbox on the state volume.
*/}}
{{- define "zimmer-sidecar.egressConfig" -}}
{{- $e := .Values.egress -}}
# Rendered by the chart from its egress values (docs/egress.md). The app
# runs with OPENAI_BASE_URL=http://{{ $e.listen }}/v1 and a placeholder key.
[egress]
listen = {{ $e.listen | quote }}
upstream = {{ $e.upstream | quote }}
auth_style = {{ $e.authStyle | quote }}
key_source = {{ $e.keySource | quote }}
{{- if eq $e.keySource "static" }}
{{- $keysDir := include "zimmer-sidecar.egressKeysDir" . }}
keys = [{{ printf "file:%s/%s" $keysDir $e.keysSecret.key | quote }}]
{{- end }}
{{- with $e.extraConfig }}
{{ . | trim }}
{{- end }}
{{- if $e.budget.enabled }}

[egress.budget]
enabled = true
tokens_per_unit = {{ int64 $e.budget.tokensPerUnit }}
reserve_tokens = {{ int64 $e.budget.reserveTokens }}
require_user = {{ $e.budget.requireUser }}
platform_ledger = {{ $e.budget.platformLedger }}
{{- end }}

[egress.outbox]
{{- if eq .Values.ledger.backend "bolt" }}
path = "{{ include "zimmer-sidecar.dataDir" . }}/egress-outbox.db"
{{- end }}
max_items = {{ int64 $e.outboxMaxItems }}
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

{{/*
A digest of what the egress reads at start only: its config and, when the
chart makes the Secret, the keys file.
*/}}
{{- define "zimmer-sidecar.egressChecksum" -}}
{{- $e := .Values.egress }}
{{- $keys := "" }}
{{- if and (eq $e.keySource "static") (not $e.keysSecret.name)
    (not .Values.secret.existingSecret) }}
{{- $keys = get .Values.secret.data $e.keysSecret.key | toString }}
{{- end }}
{{- printf "%s\n%s" (include "zimmer-sidecar.egressConfig" .) $keys | sha256sum }}
{{- end }}
