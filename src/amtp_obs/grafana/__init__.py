"""Grafana 10.4's query semantics, in one place: time ranges, intervals and ``$__*`` macros
(:mod:`.timerange`), template variables (:mod:`.templating`) and the panel/target walk that turns a
dashboard target into the query string Grafana sends (:mod:`.panels`).

Used by the embedded dashboard, ``amtp-obs check`` and ``amtp-obs verify``.
"""
