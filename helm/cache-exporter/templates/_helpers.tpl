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
{{- define "cache-exporter.webTLSDir" -}}/etc/cache-exporter/web-tls{{- end }}

{{/*
The exporter-toolkit web config from `web` (empty when nothing is set: then no --web.config.file).
*/}}
{{- define "cache-exporter.webConfig" -}}
{{- $web := .Values.web }}
{{- if not $web.configSecret }}
{{- $doc := dict }}
{{- if $web.tls.enabled }}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" (include "cache-exporter.webTLSDir" .)) "key_file" (printf "%s/tls.key" (include "cache-exporter.webTLSDir" .)) "min_version" $web.tls.minVersion }}
{{- if $web.tls.clientAuth }}
{{- $_ := set $tls "client_auth_type" "RequireAndVerifyClientCert" }}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" (include "cache-exporter.webTLSDir" .)) }}
{{- end }}
{{- $_ := set $doc "tls_server_config" $tls }}
{{- end }}
{{- with $web.basicAuthUsers }}
{{- $_ := set $doc "basic_auth_users" . }}
{{- end }}
{{- with $web.headers }}
{{- $_ := set $doc "http_server_config" (dict "headers" .) }}
{{- end }}
{{- if $doc }}
{{- toYaml $doc }}
{{- end }}
{{- end }}
{{- end }}

{{/* The --web.config.file path: from `web.configSecret`, or the rendered one in the ConfigMap; empty for none. */}}
{{- define "cache-exporter.webConfigFile" -}}
{{- if .Values.web.configSecret -}}
/etc/cache-exporter/web/web-config.yml
{{- else if include "cache-exporter.webConfig" . -}}
{{ include "cache-exporter.configDir" . }}/web-config.yml
{{- end -}}
{{- end }}

{{/*
A probe from values, made to work with the web config: HTTPS when TLS is on, a TCP check under
mutual TLS (kubelet has no client certificate).
*/}}
{{- define "cache-exporter.probe" -}}
{{- $probe := deepCopy .probe }}
{{- $tls := .root.Values.web.tls }}
{{- if and $tls.enabled (hasKey $probe "httpGet") }}
{{- if $tls.clientAuth }}
{{- $port := $probe.httpGet.port }}
{{- $_ := unset $probe "httpGet" }}
{{- $_ := set $probe "tcpSocket" (dict "port" $port) }}
{{- else }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Check that every password_file / TLS file of the config that points into the chart's mount
directories has a matching entry in `secrets` / `tlsSecrets`: a typo fails the install here
instead of a crash-looping pod.
*/}}
{{- define "cache-exporter.validateConfig" -}}
{{- with .Values.web.configSecret }}
{{- if not (and .name .key) }}
{{- fail "web.configSecret: needs both name and key (e.g. {name: cache-exporter-web, key: web-config.yml})" }}
{{- end }}
{{- if or $.Values.web.basicAuthUsers $.Values.web.headers }}
{{- fail "web.configSecret replaces the rendered web config: put basic_auth_users and headers in it, not in web.basicAuthUsers/web.headers" }}
{{- end }}
{{- end }}
{{- if and .Values.web.tls.enabled (not .Values.web.tls.existingSecret) }}
{{- fail "web.tls.enabled: set web.tls.existingSecret to a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.web.basicAuthUsers (not .Values.serviceMonitor.basicAuth) }}
{{- fail "web.basicAuthUsers is set: give the ServiceMonitor its credentials in serviceMonitor.basicAuth, or every scrape gets 401" }}
{{- end }}
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
