{{/*
The alert rules. Kept in one place: the PrometheusRule renders them, and
the chart's CI renders them to a file for `promtool test rules`.
"Last outcome" alerts compare per-target timestamps by outcome, so they
work for the daemon (counters accumulate) and for CronJob pushes (each push
replaces the group) alike. Every expression groups by namespace and job, so
two releases never mask or trip each other, and every alert names the
release.
*/}}
{{- define "tagsync.rules" -}}
{{- $m := .Values.monitoring.prometheusRule -}}
groups:
{{- if and (eq .Values.mode "cronjob") (not .Values.monitoring.pushgateway.url) }}
{{- /*
A CronJob with no Pushgateway exports no tagsync metrics at all, so the
tagsync alerts could never fire. What Kubernetes knows about the CronJob
(kube-state-metrics) is alerted on instead: the last scheduled run has not
succeeded once the Job's deadline has passed, and no success for
noSuccessIntervals intervals (or ever, for a CronJob that old).
*/}}
{{- $sel := printf "namespace=%q, cronjob=%q" .Release.Namespace (include "tagsync.fullname" .) }}
{{- $limit := mul $m.noSuccessIntervals $m.scheduleIntervalSeconds }}
  - name: tagsync-cronjob
    rules:
      - alert: TagsyncCronJobLastRunFailed
        expr: |
          max by (namespace, cronjob) (kube_cronjob_status_last_schedule_time{ {{- $sel -}} })
            > max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{ {{- $sel -}} })
          or (max by (namespace, cronjob) (kube_cronjob_status_last_schedule_time{ {{- $sel -}} })
            unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{ {{- $sel -}} })
        # The Job may retry until its activeDeadlineSeconds; after that it
        # has succeeded or failed.
        for: {{ add (div .Values.cronjob.activeDeadlineSeconds 60) 15 }}m
        labels:
          severity: warning
          release: {{ .Release.Name | quote }}
        annotations:
          summary: the last scheduled tagsync run has not succeeded
          description: The Job failed or is stuck. Check `kubectl logs job/<the last job>` and `tagsync history`; without a Pushgateway only Kubernetes' view of the CronJob is alerted on.
      - alert: TagsyncCronJobNoRecentSuccess
        expr: |
          time() - max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{ {{- $sel -}} }) > {{ $limit }}
          or (time() - max by (namespace, cronjob) (kube_cronjob_created{ {{- $sel -}} }) > {{ $limit }}
            unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{ {{- $sel -}} })
        for: 15m
        labels:
          severity: warning
          release: {{ .Release.Name | quote }}
        annotations:
          summary: tagsync has not completed a successful sync for {{ $m.noSuccessIntervals }} schedule intervals
          description: The firewall rules may be missing new Azure Digital Twins addresses. Check the CronJob's Jobs and `tagsync history`.
{{- else }}
  - name: tagsync
    rules:
      - alert: TagsyncNoRecentSuccess
        expr: time() - max by (namespace, job) (tagsync_last_success_timestamp_seconds) > {{ mul $m.noSuccessIntervals $m.scheduleIntervalSeconds }}
        for: 15m
        labels:
          severity: warning
          release: {{ .Release.Name | quote }}
        annotations:
          summary: tagsync has not completed a successful sync for {{ $m.noSuccessIntervals }} schedule intervals
          description: The firewall rules may be missing new Azure Digital Twins addresses. Check the job's logs and `tagsync history`.
      - alert: TagsyncTargetFailing
        expr: |
          (max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome=~"failed|drifted"})
            > max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome!~"failed|drifted"}))
          or
          (max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome=~"failed|drifted"})
            unless max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome!~"failed|drifted"}))
        labels:
          severity: warning
          release: {{ .Release.Name | quote }}
        annotations:
          summary: 'tagsync target {{ "{{" }} $labels.target {{ "}}" }} failed on its last run'
          description: The target's rules were not updated. Its error is in the run's output and in the history (applies table).
      - alert: TagsyncGuardRefused
        expr: |
          (max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome="refused"})
            > max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome!="refused"}))
          or
          (max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome="refused"})
            unless max by (namespace, job, target) (tagsync_target_last_apply_timestamp_seconds{outcome!="refused"}))
        labels:
          severity: warning
          release: {{ .Release.Name | quote }}
        annotations:
          summary: 'a tagsync guard refused target {{ "{{" }} $labels.target {{ "}}" }}'
          description: Nothing was written to the target. `tagsync plan` shows the guard and its numbers.
      - alert: TagsyncCapacityHigh
        # A summarizing target fills its budget by design: not an alert.
        expr: |
          (sum by (namespace, job, target) (tagsync_target_rules) / max by (namespace, job, target) (tagsync_target_rule_budget) > {{ $m.capacityRatio }})
            unless on (namespace, job, target) (max by (namespace, job, target) (tagsync_target_overadmitted_addresses) > 0)
        labels:
          severity: info
          release: {{ .Release.Name | quote }}
        annotations:
          summary: 'tagsync target {{ "{{" }} $labels.target {{ "}}" }} uses over {{ mulf $m.capacityRatio 100 }}% of its rule budget'
          description: A growing tag will soon not fit. Consider a regional sub-tag or overflow = "summarize".
      - alert: TagsyncFeedStale
        expr: max by (namespace, job) (tagsync_feed_age_seconds) > {{ mul $m.feedMaxAgeDays 86400 }}
        for: 1h
        labels:
          severity: warning
          release: {{ .Release.Name | quote }}
        annotations:
          summary: the service tags feed tagsync uses is older than {{ $m.feedMaxAgeDays }} days
          description: Microsoft publishes weekly. A stale feed means the download keeps failing or a mirror or the Discovery API lags.
{{- end }}
{{- end -}}
