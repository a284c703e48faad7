{{/*
Names come from hub.prefix exactly as spawner/core/names.py makes them (tests/unit/test_helm.py
renders the chart and checks that they agree).
*/}}
{{- define "stackhub.prefix" -}}
{{- .Values.hub.prefix | default "stackhub" -}}
{{- end -}}

{{/* the users' namespace: user servers and dask clusters, apart from the hub and its Secrets */}}
{{- define "stackhub.usersNamespace" -}}
{{- ((.Values.spawner).backend).namespace | default (printf "%s-users" .Release.Namespace) -}}
{{- end -}}

{{/* a peer in the other namespace of the release (NetworkPolicy): namespace and pod labels */}}
{{- define "stackhub.peer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  podSelector:
    matchLabels:
      stackhub.deployment: {{ include "stackhub.prefix" .root }}
      stackhub.role: {{ .role }}
{{- end -}}

{{/* hub.subdomains: each user server at https://<user>.<serverDomain> (JupyterHub's subdomain_host):
the Ingress routes the wildcard host too and the proxy routes by host. Templates see values.yaml
only (no schema defaults): an absent key is the config model's default, true (values.yaml sets it) */}}
{{- define "stackhub.subdomains" -}}
{{- if hasKey .Values.hub "subdomains" }}{{ .Values.hub.subdomains }}{{ else }}true{{ end -}}
{{- end -}}

{{- define "stackhub.labels" -}}
stackhub.deployment: {{ include "stackhub.prefix" .root }}
stackhub.role: {{ .role }}
app.kubernetes.io/name: stackhub
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "stackhub.selector" -}}
stackhub.deployment: {{ include "stackhub.prefix" .root }}
stackhub.role: {{ .role }}
{{- end -}}

{{/* stackhub.yaml: every value but the chart's own section */}}
{{- define "stackhub.config" -}}
{{- $values := omit .Values "chart" }}
{{- $spawner := deepCopy ($values.spawner | default dict) }}
{{- $backend := $spawner.backend | default dict }}
{{- $_ := set $backend "namespace" (include "stackhub.usersNamespace" .) }}
{{- $_ = set $spawner "backend" $backend }}
{{- $_ = set $values "spawner" $spawner }}
{{- toYaml $values -}}
{{- end -}}

{{- define "stackhub.coursesPort" -}}
{{- (.Values.courses | default dict).servicePort | default 10102 -}}
{{- end -}}

{{- define "stackhub.coursesEnabled" -}}
{{- $c := .Values.courses | default dict -}}
{{- if hasKey $c "enabled" }}{{ $c.enabled }}{{ else }}true{{ end -}}
{{- end -}}

{{- define "stackhub.coursesClaim" -}}
{{- (.Values.courses | default dict).volume | default "stackhub-courses" -}}
{{- end -}}

{{/* the same hardening as user pods: non-root, nothing to escalate, no capabilities */}}
{{- define "stackhub.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "stackhub.resources" -}}
requests:
  cpu: {{ .cpu }}
  memory: {{ .memory }}
limits:
  memory: {{ .memoryLimit }}
{{- end -}}

{{/* every public IPv4 address: never private, link-local (cloud metadata) or other special ranges
(the list is spawner/deploy/isolation.py's BLOCKED_IPV4); users' servers and dask clusters */}}
{{- define "stackhub.publicAddresses" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except:
      - 0.0.0.0/8
      - 10.0.0.0/8
      - 100.64.0.0/10
      - 127.0.0.0/8
      - 169.254.0.0/16
      - 172.16.0.0/12
      - 192.0.0.0/24
      - 192.168.0.0/16
      - 198.18.0.0/15
      - 224.0.0.0/4
      - 240.0.0.0/4
{{- end -}}
