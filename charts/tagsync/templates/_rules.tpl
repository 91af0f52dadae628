{{/*
The alert rules. Kept in one place: the PrometheusRule renders them, and
the chart's CI renders them to a file for `promtool test rules`.
"Last outcome" alerts compare per-target timestamps by outcome, so they
work for the daemon (counters accumulate) and for CronJob pushes (each push
replaces the group) alike.
*/}}
{{- define "tagsync.rules" -}}
{{- $m := .Values.monitoring.prometheusRule -}}
groups:
  - name: tagsync
    rules:
      - alert: TagsyncNoRecentSuccess
        expr: time() - max(tagsync_last_success_timestamp_seconds) > {{ mul $m.noSuccessIntervals $m.scheduleIntervalSeconds }}
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: tagsync has not completed a successful sync for {{ $m.noSuccessIntervals }} schedule intervals
          description: The firewall rules may be missing new Azure Digital Twins addresses. Check the job's logs and `tagsync history`.
      - alert: TagsyncTargetFailing
        expr: |
          (max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome=~"failed|drifted"})
            > max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome!~"failed|drifted"}))
          or
          (max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome=~"failed|drifted"})
            unless max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome!~"failed|drifted"}))
        labels:
          severity: warning
        annotations:
          summary: 'tagsync target {{ "{{" }} $labels.target {{ "}}" }} failed on its last run'
          description: The target's rules were not updated. Its error is in the run's output and in the history (applies table).
      - alert: TagsyncGuardRefused
        expr: |
          (max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome="refused"})
            > max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome!="refused"}))
          or
          (max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome="refused"})
            unless max by (target) (tagsync_target_last_apply_timestamp_seconds{outcome!="refused"}))
        labels:
          severity: warning
        annotations:
          summary: 'a tagsync guard refused target {{ "{{" }} $labels.target {{ "}}" }}'
          description: Nothing was written to the target. `tagsync plan` shows the guard and its numbers.
      - alert: TagsyncCapacityHigh
        expr: sum by (target) (tagsync_target_rules) / max by (target) (tagsync_target_rule_budget) > {{ $m.capacityRatio }}
        labels:
          severity: info
        annotations:
          summary: 'tagsync target {{ "{{" }} $labels.target {{ "}}" }} uses over {{ mulf $m.capacityRatio 100 }}% of its rule budget'
          description: A growing tag will soon not fit. Consider a regional sub-tag or overflow = "summarize".
      - alert: TagsyncFeedStale
        expr: max(tagsync_feed_age_seconds) > {{ mul $m.feedMaxAgeDays 86400 }}
        for: 1h
        labels:
          severity: warning
        annotations:
          summary: the service tags feed tagsync uses is older than {{ $m.feedMaxAgeDays }} days
          description: Microsoft publishes weekly. A stale feed means the download keeps failing or a mirror or the Discovery API lags.
{{- end -}}
