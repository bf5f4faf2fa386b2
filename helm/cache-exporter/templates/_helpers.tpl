{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "cache-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "cache-exporter.fullname" -}}
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

{{- define "cache-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "cache-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cache-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "cache-exporter.labels" -}}
helm.sh/chart: {{ include "cache-exporter.chart" . }}
{{ include "cache-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cache-exporter
{{- end }}

{{- define "cache-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cache-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cache-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where secrets and TLS files are mounted; config paths refer to these. */}}
{{- define "cache-exporter.secretsDir" -}}/etc/cache-exporter/secrets{{- end }}
{{- define "cache-exporter.tlsDir" -}}/etc/cache-exporter/tls{{- end }}
{{- define "cache-exporter.configDir" -}}/etc/cache-exporter/config{{- end }}

{{/*
Check that every password_file / TLS file of the config that points into the chart's mount
directories has a matching entry in `secrets` / `tlsSecrets`: a typo fails the install here
instead of a crash-looping pod.
*/}}
{{- define "cache-exporter.validateConfig" -}}
{{- $secretNames := list }}
{{- range .Values.secrets }}
{{- if has .name $secretNames }}
{{- fail (printf "secrets: the name %q is used twice" .name) }}
{{- end }}
{{- $secretNames = append $secretNames .name }}
{{- end }}
{{- $tlsNames := list }}
{{- range .Values.tlsSecrets }}
{{- if has .name $tlsNames }}
{{- fail (printf "tlsSecrets: the name %q is used twice" .name) }}
{{- end }}
{{- $tlsNames = append $tlsNames .name }}
{{- end }}
{{- $secretsPrefix := printf "%s/" (include "cache-exporter.secretsDir" .) }}
{{- $tlsPrefix := printf "%s/" (include "cache-exporter.tlsDir" .) }}
{{- range $i, $t := (.Values.config.targets | default list) }}
{{- $pf := get $t "password_file" | default "" | toString }}
{{- if hasPrefix $secretsPrefix $pf }}
{{- $name := trimPrefix $secretsPrefix $pf }}
{{- if not (has $name $secretNames) }}
{{- fail (printf "config.targets[%d].password_file %s: no entry named %q in secrets" $i $pf $name) }}
{{- end }}
{{- end }}
{{- $tls := get $t "tls" | default dict }}
{{- range $k := list "ca_file" "cert_file" "key_file" }}
{{- $f := get $tls $k | default "" | toString }}
{{- if hasPrefix $tlsPrefix $f }}
{{- $name := first (splitList "/" (trimPrefix $tlsPrefix $f)) }}
{{- if not (has $name $tlsNames) }}
{{- fail (printf "config.targets[%d].tls.%s %s: no entry named %q in tlsSecrets" $i $k $f $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The TCP ports the configured targets are reached on, as a JSON list of unique integers (for the
NetworkPolicy): redis(s)/valkey(s) URLs default to 6379, memcached addresses to 11211, http 80,
https 443. Unix sockets need no port.
*/}}
{{- define "cache-exporter.targetPorts" -}}
{{- $ports := list }}
{{- $defaults := dict "redis" 6379 "rediss" 6379 "valkey" 6379 "valkeys" 6379 "http" 80 "https" 443 }}
{{- range $t := (.Values.config.targets | default list) }}
{{- $urls := list }}
{{- with (get $t "url") }}{{ $urls = append $urls . }}{{ end }}
{{- range (get $t "urls" | default list) }}{{ $urls = append $urls . }}{{ end }}
{{- with (get $t "bypass") }}{{ with (get . "origin_url") }}{{ $urls = append $urls . }}{{ end }}{{ end }}
{{- range $u := $urls }}
{{- $p := urlParse (toString $u) }}
{{- if hasKey $defaults $p.scheme }}
{{- $m := regexFind ":[0-9]+$" $p.host }}
{{- $ports = append $ports (ternary (trimPrefix ":" $m | atoi) (get $defaults $p.scheme) (ne $m "")) }}
{{- end }}
{{- end }}
{{- with (get $t "address") }}
{{- $a := toString . }}
{{- if not (hasPrefix "/" $a) }}
{{- $m := regexFind ":[0-9]+$" (regexReplaceAll "^\\[[^]]*\\]" $a "") }}
{{- $ports = append $ports (ternary (trimPrefix ":" $m | atoi) 11211 (ne $m "")) }}
{{- end }}
{{- end }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}
