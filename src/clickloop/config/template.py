"""The example project ``clickloop init`` writes (kept working: a test loads it)."""

from __future__ import annotations

PROJECT_YAML = """\
# clickloop project configuration.
#
# Every section is optional; an absent backend section means the embedded
# default (no server needed). Values may use ${{ENV_VAR}} or ${{ENV_VAR:-default}},
# and any key can be overridden from the environment:
#   CLICKLOOP_BUS__TYPE=kafka CLICKLOOP_BUS__BOOTSTRAP=k1:9092 clickloop ingest stream
# Reference: README.md, section "Configuration reference".

project: {name}
home: .clickloop                 # embedded state: local bus, lake, SQLite files

# Event bus: the embedded durable log, or Kafka.
bus:
  type: local
  # type: kafka
  # bootstrap: "${{KAFKA_BOOTSTRAP:-localhost:9092}}"
  # partitions: 12

# Raw lake: Parquet partitioned by event date.
lake:
  type: local
  # type: fsspec
  # root: "s3://my-bucket/clickloop"

stores:
  online: {{type: sqlite}}        # or {{type: redis, url: "${{REDIS_URL}}"}}
  metadata: {{type: sqlite}}      # or {{type: postgres, url: "${{DATABASE_URL}}"}}

# Where events come from. Canonical fields: event_id, ts, received_at, type,
# user_id, session_id, url, referrer, props. Columns with other names are
# mapped with `columns:`; unmapped columns go into props.
sources:
  web:
    type: collector              # POST /v1/events and GET /v1/p.gif
    port: 8081
    pixel_public: true
    # tokens: ["${{COLLECTOR_TOKEN}}"]
  exports:
    type: files
    path: "data/*.jsonl"         # also CSV, Parquet, .gz, s3://…, gs://…
  # partner:
  #   type: files
  #   path: "data/partner/*.csv"
  #   columns:
  #     event_id: id
  #     ts: {{from: time, format: epoch_ms}}
  #     user_id: uid
  #     url: page
  #     type: {{const: page_view}}

ingest:
  dedupe_horizon: 7d             # an event_id seen again within this span is a duplicate
  max_future: 1h                 # events stamped further ahead of arrival are quarantined

# What URLs mean. Declared rules use WHATWG URL Pattern syntax; `clickloop urls
# learn` discovers the rest into the knowledge file for review.
urls:
  knowledge: urls/knowledge.yaml
  rules:
    - pattern: "https://shop.example.com/items/:category/:item_id"
      fields: {{category: {{type: category, dictionary: shop_categories}}, item_id: {{type: int}}}}
  dictionaries:
    shop_categories: {{1: clothes, 2: games, 3: books, 4: electronics, 5: home, 6: sports,
                      7: beauty, 8: toys}}

features:
  user_activity:
    entity: user_id
    where: "type = 'page_view'"
    derive: {{category: url.category}}
    aggregate:
      - {{op: count, windows: [1h, 1d, 7d]}}
      - {{op: distinct_count, column: url.item_id, windows: [1d, 7d]}}
      - {{op: top_k, column: category, k: 5, windows: [7d]}}
      - {{op: histogram, column: category, k: 20, windows: [7d, 30d]}}   # views per category
      - {{op: since_last}}
  user_clicks:
    entity: user_id
    where: "type = 'click'"
    aggregate:
      - {{op: count, windows: [1d, 7d]}}
  session_activity:                          # keyed by the session: what this visit is about
    entity: session_id
    where: "type = 'page_view'"
    derive: {{category: url.category}}
    aggregate:
      - {{op: count, windows: [lifetime]}}
      - {{op: histogram, column: category, k: 20, windows: [lifetime]}}
  item_impressions:                          # keyed by the item: its popularity
    entity: props.item_id
    where: "type = 'impression'"
    aggregate:
      - {{op: count, windows: [1d, 7d]}}
  item_clicks:
    entity: props.item_id
    where: "type = 'click'"
    aggregate:
      - {{op: count, windows: [1d, 7d]}}

# Models: `clickloop train ctr` builds examples and labels from the lake, joins the
# feature sets point-in-time, selects features, fits, calibrates and writes a report;
# `clickloop models promote` moves the champion alias through the gates.
models:
  ctr:
    examples: "type = 'impression'"          # which events are examples
    label: {{event: "type = 'click'", match: [user_id, props.item_id], within: 30m}}
    features: [user_activity, user_clicks, session_activity, item_impressions, item_clicks,
               request.url]                  # request.url: page__*, item__* fields
    context: [props.position, props.device]  # request-time fields of the example itself
    crosses:                                 # the user's and the session's interest in the item
      - {{feature: user_activity__top_k_category_7d, key: item__category}}
      - {{feature: user_activity__histogram_category_7d, key: item__category}}
      - {{feature: user_activity__histogram_category_30d, key: item__category}}
      - {{feature: session_activity__histogram_category, key: item__category}}
      - {{feature: page__category, key: item__category}}   # is the page about the item's category?
    split: {{by: time, test: 20%, validation: 10%, gap: 1h}}
    sampling: {{negatives: 0.25}}              # scores are prior-corrected back to the true rate
    selection: {{max_features: 50, leakage_auc: 0.99}}
    algorithm: {{type: lightgbm, params: {{num_leaves: 63}}}}   # or logistic, or module:Class
    gates: {{metric: roc_auc, min_gain: 0.002, max_slice_regression: 0.01}}

serving:
  port: 8080
  model: ctr@champion
  # tokens: ["${{SERVING_TOKEN}}"]

logging:
  format: console                # json for fluentd / fluent-bit
  level: INFO
"""

GITIGNORE = """\
# clickloop embedded state (local bus, lake, SQLite files)
.clickloop/
"""
