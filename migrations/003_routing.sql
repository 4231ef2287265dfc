-- 003_routing: the endpoint that served each call, and every attempt of a
-- call beside its usage row (fallbacks, retries, hedges), so the operator
-- sees what failed attempts and lost hedges cost; the caller pays only the
-- attempt that served (usage_events.cost_nano_usd).
ALTER TABLE usage_events ADD COLUMN endpoint_id text NULL;

CREATE TABLE call_attempts (
  request_id        text    NOT NULL,  -- usage_events.request_id of the call
  attempt           int     NOT NULL,  -- 1, 2, ... in start order
  endpoint_id       text    NOT NULL,
  provider          text    NOT NULL,  -- display name
  upstream_model    text    NOT NULL,
  -- served | failed | broken | rate_limited | rejected | hedge_lost | cancelled
  outcome           text    NOT NULL,
  status            int     NOT NULL,  -- HTTP status of the attempt's outcome
  error_code        text    NULL,
  started_ms        bigint  NOT NULL,  -- after the call was received
  latency_ms        bigint  NOT NULL,  -- attempt start to its end
  ttft_ms           bigint  NULL,      -- attempt start to its first output
  prompt_tokens     bigint  NOT NULL DEFAULT 0,
  completion_tokens bigint  NOT NULL DEFAULT 0,
  cached_tokens     bigint  NOT NULL DEFAULT 0,
  -- What the attempt cost the operator (estimated when cut short); charged to
  -- the caller only for the served attempt.
  cost_nano_usd     bigint  NOT NULL DEFAULT 0,
  PRIMARY KEY (request_id, attempt)
);

CREATE INDEX call_attempts_endpoint_idx ON call_attempts (endpoint_id, outcome);
