{{- define "bastion.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bastion.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bastion.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* "true" when every piece of state is in PostgreSQL (the catalog, and the index with pgvector):
     the servers are then a Deployment of .Values.replicas pods without a volume, and the sync worker a CronJob. */}}
{{- define "bastion.stateless" -}}
{{- if and .Values.catalog.url (eq .Values.store.backend "pgvector") }}true{{ end -}}
{{- end -}}

{{/* Refuse values that cannot work: several servers on state kept in one pod's volume. */}}
{{- define "bastion.validate" -}}
{{- if not (has .Values.store.backend (list "lance" "pgvector")) }}
{{- fail (printf "store.backend %q: use lance or pgvector" .Values.store.backend) }}
{{- end }}
{{- if and .Values.catalog.url (not (hasPrefix "postgresql" .Values.catalog.url)) }}
{{- fail "catalog.url must be a PostgreSQL URL (postgresql+psycopg://user@host:5432/db, no password in it)" }}
{{- end }}
{{- if and (eq .Values.store.backend "pgvector") (not .Values.catalog.url) (not .Values.store.url) }}
{{- fail "store.backend pgvector needs a PostgreSQL database: set catalog.url (the store shares it) or store.url" }}
{{- end }}
{{- if gt (int .Values.replicas) 1 }}
{{- if not .Values.catalog.url }}
{{- fail "replicas > 1 needs the catalog on PostgreSQL (catalog.url): the SQLite catalog is a file in one pod's volume" }}
{{- end }}
{{- if ne .Values.store.backend "pgvector" }}
{{- fail "replicas > 1 needs store.backend pgvector: the LanceDB index is a folder in one pod's volume" }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The selector of the pods that serve HTTP (the Service's): the StatefulSet keeps the selector it always had. */}}
{{- define "bastion.serverSelector" -}}
{{ include "bastion.selector" . }}
{{- if include "bastion.stateless" . }}
app.kubernetes.io/component: server
{{- end }}
{{- end -}}

{{/* The container's environment, shared by the servers and the sync worker. */}}
{{- define "bastion.env" -}}
- name: BASTION_HOME
  value: /var/lib/bastion
{{- with .Values.catalog.url }}
- name: BASTION_CATALOG__URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.catalog.passwordSecret.name }}
- name: BASTION_CATALOG__PASSWORD_ENV
  value: BASTION_DB_PASSWORD
- name: BASTION_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.catalog.passwordSecret.key }}
{{- end }}
{{- if eq .Values.store.backend "pgvector" }}
- name: BASTION_STORE__BACKEND
  value: pgvector
{{- end }}
{{- with .Values.store.url }}
- name: BASTION_STORE__URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.store.passwordSecret.name }}
- name: BASTION_STORE__PASSWORD_ENV
  value: BASTION_STORE_PASSWORD
- name: BASTION_STORE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.store.passwordSecret.key }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey }}
{{- end }}
{{- end -}}

{{/* The volume mounts of a container: the workspace folder, /tmp and the document folders (read-only). */}}
{{- define "bastion.volumeMounts" -}}
- name: workspace
  mountPath: /var/lib/bastion
- name: tmp
  mountPath: /tmp
{{- range .Values.documents }}
- name: documents-{{ .name }}
  mountPath: /srv/documents/{{ .name }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The pod's volumes; stateless pods hold their workspace folder (bastion.toml, model files) in an emptyDir. */}}
{{- define "bastion.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if include "bastion.stateless" . }}
- name: workspace
  emptyDir: {}
{{- end }}
{{- range .Values.documents }}
- name: documents-{{ .name }}
  {{- toYaml .volume | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod settings shared by the servers and the sync worker. */}}
{{- define "bastion.podPlacement" -}}
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

{{/* The server container (bastion serve on .Values.port, with its probes). */}}
{{- define "bastion.serverContainer" -}}
- name: bastion
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["bastion", "serve", "--host", "0.0.0.0", "--port", "{{ .Values.port }}"]
  env:
    {{- include "bastion.env" . | nindent 4 }}
  ports:
    - name: http
      containerPort: {{ .Values.port }}
  startupProbe:
    httpGet:
      path: /healthz
      port: http
    periodSeconds: 5
    failureThreshold: 60
  livenessProbe:
    httpGet:
      path: /healthz
      port: http
    periodSeconds: 20
    timeoutSeconds: 5
  readinessProbe:
    httpGet:
      path: /readyz
      port: http
    periodSeconds: 10
    timeoutSeconds: 10
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  volumeMounts:
    {{- include "bastion.volumeMounts" . | nindent 4 }}
{{- end -}}
