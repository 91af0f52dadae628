{{- define "tagsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tagsync.fullname" -}}
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

{{/* An identity is needed only once there are targets: with none, tagsync
records the feed history and never calls Azure. */}}
{{- define "tagsync.needsIdentity" -}}
{{- if .Values.targets -}}true{{- end -}}
{{- end -}}

{{/* Workload identity is wired (service account annotation, pod label) when
it is the identity type and there is a client id, or targets need one (then
the missing client id is an error). */}}
{{- define "tagsync.workloadIdentity" -}}
{{- if and (eq .Values.identity.type "workload-identity") (or .Values.identity.clientId (include "tagsync.needsIdentity" .)) -}}true{{- end -}}
{{- end -}}

{{- define "tagsync.labels" -}}
app.kubernetes.io/name: {{ include "tagsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tagsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tagsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tagsync.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tagsync.claimName" -}}
{{- default (printf "%s-history" (include "tagsync.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* The TOML configuration: values.config and targets, plus what the chart decides (paths, auth). */}}
{{- define "tagsync.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $db := default dict $cfg.database -}}
{{- $_ := set $db "path" "/var/lib/tagsync/tagsync.db" -}}
{{- $_ := set $cfg "database" $db -}}
{{- $azure := default dict $cfg.azure -}}
{{- $_ := set $azure "auth" .Values.identity.type -}}
{{- if and .Values.identity.clientId (eq .Values.identity.type "managed-identity") -}}
{{- $_ := set $azure "client_id" .Values.identity.clientId -}}
{{- end -}}
{{- if eq .Values.identity.type "client-secret" -}}
{{- $_ := set $azure "client_secret_file" "/var/run/secrets/tagsync/client-secret" -}}
{{- end -}}
{{- $_ := set $cfg "azure" $azure -}}
{{- if .Values.targets -}}
{{- $_ := set $cfg "targets" (deepCopy .Values.targets) -}}
{{- end -}}
{{- if .Values.notify -}}
{{- $receivers := list -}}
{{- range $i, $n := .Values.notify -}}
{{- $r := omit $n "secretName" "secretKey" "urlSecretName" "urlSecretKey" -}}
{{- if $n.secretName -}}
{{- $_ := set $r "secret_file" (printf "/var/run/secrets/tagsync-notify-%d/secret" $i) -}}
{{- end -}}
{{- if $n.urlSecretName -}}
{{- $_ := set $r "url_file" (printf "/var/run/secrets/tagsync-notify-%d/url" $i) -}}
{{- end -}}
{{- $receivers = append $receivers $r -}}
{{- end -}}
{{- $_ := set $cfg "notify" $receivers -}}
{{- end -}}
{{- /* Helm reads every number of a values file as a float: `max_rules: 100`
       would render as `max_rules = 100.0`, which tagsync rightly refuses.
       Whole numbers become integers again, except the keys that are floats
       in tagsync's configuration. */ -}}
{{- $floats := list "max_removal_ratio" -}}
{{- range $section, $table := $cfg -}}
{{- if kindIs "map" $table -}}
{{- include "tagsync.integers" (dict "table" $table "floats" $floats) -}}
{{- else if kindIs "slice" $table -}}
{{- range $table -}}
{{- if kindIs "map" . -}}
{{- include "tagsync.integers" (dict "table" . "floats" $floats) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toToml $cfg -}}
{{- end -}}

{{/* Turns the whole-number floats of one TOML table into integers, in
place (renders nothing). */}}
{{- define "tagsync.integers" -}}
{{- $table := .table -}}
{{- $floats := .floats -}}
{{- range $key, $value := $table -}}
{{- if and (kindIs "float64" $value) (not (has $key $floats)) (eq $value (floor $value)) -}}
{{- $_ := set $table $key (int64 $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pod spec shared by the CronJob and the Deployment. */}}
{{- define "tagsync.podSpec" -}}
serviceAccountName: {{ include "tagsync.serviceAccountName" . }}
automountServiceAccountToken: {{ eq .Values.identity.type "workload-identity" }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: tagsync
    image: "{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}"
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
      {{- if eq .Values.mode "daemon" }}
      - daemon
      - --schedule
      - {{ .Values.schedule | quote }}
      - --time-zone
      - {{ .Values.timeZone | quote }}
      - --listen
      - "0.0.0.0:{{ .Values.daemon.port }}"
      - --jitter
      - {{ .Values.daemon.jitter | quote }}
      {{- if .Values.daemon.runAtStart }}
      - --run-at-start
      {{- end }}
      {{- else }}
      - sync
      {{- if .Values.monitoring.pushgateway.url }}
      - --pushgateway
      - {{ .Values.monitoring.pushgateway.url | quote }}
      - --push-job
      - {{ .Values.monitoring.pushgateway.job | quote }}
      {{- end }}
      {{- end }}
      - --config
      - /etc/tagsync/tagsync.toml
      - --log-format
      - {{ .Values.logFormat | quote }}
    env:
      {{- if .Values.identity.tenantId }}
      - name: AZURE_TENANT_ID
        value: {{ .Values.identity.tenantId | quote }}
      {{- end }}
      {{- if and .Values.identity.clientId (ne .Values.identity.type "managed-identity") }}
      - name: AZURE_CLIENT_ID
        value: {{ .Values.identity.clientId | quote }}
      {{- end }}
      {{- with .Values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .Values.extraEnvFrom }}
    envFrom:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- if eq .Values.mode "daemon" }}
    ports:
      - name: metrics
        containerPort: {{ .Values.daemon.port }}
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 30
    readinessProbe:
      httpGet:
        path: /readyz
        port: metrics
      periodSeconds: 30
    {{- end }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/tagsync
        readOnly: true
      - name: history
        mountPath: /var/lib/tagsync
      - name: tmp
        mountPath: /tmp
      {{- if eq .Values.identity.type "client-secret" }}
      - name: client-secret
        mountPath: /var/run/secrets/tagsync
        readOnly: true
      {{- end }}
      {{- range $i, $n := .Values.notify }}
      {{- if or $n.secretName $n.urlSecretName }}
      - name: notify-{{ $i }}
        mountPath: /var/run/secrets/tagsync-notify-{{ $i }}
        readOnly: true
      {{- end }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "tagsync.fullname" . }}
  - name: history
    {{- if .Values.persistence.enabled }}
    persistentVolumeClaim:
      claimName: {{ include "tagsync.claimName" . }}
    {{- else }}
    emptyDir: {}
    {{- end }}
  - name: tmp
    emptyDir: {}
  {{- if eq .Values.identity.type "client-secret" }}
  - name: client-secret
    secret:
      secretName: {{ required "identity.existingSecret is required for client-secret" .Values.identity.existingSecret }}
      items:
        - key: {{ .Values.identity.secretKey }}
          path: client-secret
  {{- end }}
  {{- range $i, $n := .Values.notify }}
  {{- if or $n.secretName $n.urlSecretName }}
  - name: notify-{{ $i }}
    projected:
      sources:
        {{- if $n.secretName }}
        - secret:
            name: {{ $n.secretName }}
            items:
              - key: {{ default "secret" $n.secretKey }}
                path: secret
        {{- end }}
        {{- if $n.urlSecretName }}
        - secret:
            name: {{ $n.urlSecretName }}
            items:
              - key: {{ default "url" $n.urlSecretKey }}
                path: url
        {{- end }}
  {{- end }}
  {{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tagsync.podLabels" -}}
{{ include "tagsync.selectorLabels" . }}
{{- if include "tagsync.workloadIdentity" . }}
azure.workload.identity/use: "true"
{{- end }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
