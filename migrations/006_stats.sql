-- 006_stats: usage statistics that stay cheap as usage grows.
--
--  * usage_events is partitioned by day (UTC) on created_at, so retention
--    drops whole partitions (tollgate_drop_usage_partitions) and time-range
--    queries touch only the days they ask for.
--  * Rollups per UTC quarter hour, UTC hour and UTC day, keyed by model,
--    provider, endpoint, account, key and app, are added to by the usage
--    writer in the statement that inserts the usage rows
--    (tollgate_rollup_usage on the INSERT's RETURNING), so a row counts once
--    and stats queries never scan raw rows. Rollups outlive retention.
--  * App attribution (OpenRouter's HTTP-Referer and X-Title headers) on each
--    usage row and in the apps table.
--
-- Three tiers, each an exact sum of the one below; a query reads the coarsest
-- that fits its range and buckets (billing/src/stats_store.cpp):
--  * usage_rollup_1d (UTC days): unbucketed totals over long windows (whole
--    UTC days) and day buckets in UTC.
--  * usage_rollup_1h (UTC hours): the hours and days of every time zone whose
--    UTC offset is a whole number of hours over the range (most of them,
--    DST included: New York's days are unions of UTC hours).
--  * usage_rollup_15m (UTC quarter hours): exists only because some zones
--    have :30 or :45 offsets (India +05:30, Nepal +05:45, Chatham +12:45;
--    IANA tz database). Every offset in use is a multiple of 15 minutes, so
--    the hours and days of any zone are exact unions of quarter hours; the
--    partial hours at the ends of a range come from here too.

-- ---------------------------------------------------------------- usage_events, partitioned

ALTER TABLE usage_events RENAME TO usage_events_unpartitioned;
ALTER INDEX usage_events_pkey RENAME TO usage_events_unpartitioned_pkey;
ALTER INDEX usage_events_api_key_created_idx RENAME TO usage_events_unpartitioned_key_idx;
ALTER INDEX usage_events_model_created_idx RENAME TO usage_events_unpartitioned_model_idx;

-- Columns as in 001-004, in the same order, then app and app_title.
CREATE TABLE usage_events (
  request_id        text        NOT NULL,
  api_key_id        bigint      NULL REFERENCES api_keys (id),
  model             text        NOT NULL,
  provider          text        NOT NULL,
  upstream_model    text        NOT NULL,
  prompt_tokens     bigint      NOT NULL DEFAULT 0,
  completion_tokens bigint      NOT NULL DEFAULT 0,
  cached_tokens     bigint      NOT NULL DEFAULT 0,
  reasoning_tokens  bigint      NOT NULL DEFAULT 0,
  cost_nano_usd     bigint      NOT NULL DEFAULT 0,
  latency_ms        bigint      NOT NULL DEFAULT 0,
  ttft_ms           bigint      NULL,
  status            int         NOT NULL,
  finish_reason     text        NULL,
  streamed          bool        NOT NULL DEFAULT false,
  cancelled         bool        NOT NULL DEFAULT false,
  usage_estimated   bool        NOT NULL DEFAULT false,
  error_code        text        NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  finished_at       timestamptz NOT NULL DEFAULT now(),
  cache_write_tokens bigint     NOT NULL DEFAULT 0,
  endpoint_id       text        NULL,
  account_id        bigint      NULL,
  lease_holder      text        NULL,
  price_snapshot    jsonb       NULL,
  byok              boolean     NOT NULL DEFAULT false,
  provider_cost_nano_usd bigint NULL,
  -- The calling app: the HTTP-Referer's origin ("https://example.com"), or
  -- "title:<X-Title>" without a referer; NULL when the caller sent neither.
  app               text        NULL,
  app_title         text        NULL,   -- X-Title / X-OpenRouter-Title as sent (trimmed, <= 200 bytes)
  -- A partitioned table's unique keys must contain the partition key; the
  -- request id alone is unique through usage_request_ids.
  PRIMARY KEY (request_id, created_at)
) PARTITION BY RANGE (created_at);

-- The request id of every usage row: the writer's idempotency key across all
-- partitions. The writer inserts a usage row only when it inserted its id
-- here (INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING), in the
-- same statement; retention deletes the ids with their partition.
CREATE TABLE usage_request_ids (
  request_id  text        PRIMARY KEY,
  created_at  timestamptz NOT NULL   -- usage_events.created_at of the row
);

-- The retention horizon: usage rows created before it may have been deleted
-- with their request ids, so the writer can no longer tell whether such a
-- row was already written and charged; it skips rows created before it (a
-- spool replayed after an outage longer than the retention), rather than
-- risk counting a call twice. Raised by tollgate_drop_usage_partitions.
CREATE TABLE usage_retention_horizon (
  only_row  boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
  horizon   timestamptz NOT NULL
);
INSERT INTO usage_retention_horizon (horizon) VALUES ('-infinity');

CREATE INDEX usage_events_api_key_created_idx ON usage_events (api_key_id, created_at);
CREATE INDEX usage_events_model_created_idx ON usage_events (model, created_at);
-- The drill-down list: newest first, keyset-paged on (created_at, request_id).
CREATE INDEX usage_events_created_idx ON usage_events (created_at, request_id);

-- Rows outside every daily partition (a replayed spool row older than the
-- partitions, a clock far off) land here rather than fail.
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

-- The partition of UTC day `day`: usage_events_pYYYYMMDD.
CREATE FUNCTION tollgate_usage_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'usage_events_p' || to_char(day, 'YYYYMMDD') $$;

-- Creates the missing daily partitions for from_day .. to_day (UTC days,
-- inclusive); returns how many it created. A day that already has rows in
-- the default partition is left there (creating its partition would have to
-- move them under an exclusive lock); retention deletes them in time.
-- Serialised by a transaction-scoped advisory lock, so replicas may all call it.
CREATE FUNCTION tollgate_ensure_usage_partitions(from_day date, to_day date) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  d date;
  lo timestamptz;
  hi timestamptz;
  created int := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('tollgate_usage_partitions'));
  d := from_day;
  WHILE d <= to_day LOOP
    IF to_regclass(tollgate_usage_partition_name(d)) IS NULL THEN
      lo := d::timestamp AT TIME ZONE 'UTC';
      hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
      IF NOT EXISTS (SELECT 1 FROM usage_events_default WHERE created_at >= lo AND created_at < hi) THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
                       tollgate_usage_partition_name(d), lo, hi);
        created := created + 1;
      END IF;
    END IF;
    d := d + 1;
  END LOOP;
  RETURN created;
END
$$;

-- Retention: drops every daily partition that ends at or before `before`
-- (with the call_attempts and usage_request_ids rows of its calls) and deletes older rows of the
-- default partition. Rollups are kept. Returns the number of partitions dropped.
CREATE FUNCTION tollgate_drop_usage_partitions(before timestamptz) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  part record;
  dropped int := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('tollgate_usage_partitions'));
  UPDATE usage_retention_horizon SET horizon = greatest(horizon, before);
  FOR part IN
    SELECT c.relname AS name, to_date(substr(c.relname, 15), 'YYYYMMDD') AS day
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'usage_events'::regclass AND c.relname ~ '^usage_events_p[0-9]{8}$'
    ORDER BY 2
  LOOP
    EXIT WHEN (part.day + 1)::timestamp AT TIME ZONE 'UTC' > before;
    EXECUTE format('DELETE FROM call_attempts WHERE request_id IN (SELECT request_id FROM %I)', part.name);
    EXECUTE format('DELETE FROM usage_request_ids WHERE request_id IN (SELECT request_id FROM %I)', part.name);
    EXECUTE format('DROP TABLE %I', part.name);
    dropped := dropped + 1;
  END LOOP;
  DELETE FROM call_attempts WHERE request_id IN
    (SELECT request_id FROM usage_events_default WHERE created_at < before);
  DELETE FROM usage_request_ids WHERE request_id IN
    (SELECT request_id FROM usage_events_default WHERE created_at < before);
  DELETE FROM usage_events_default WHERE created_at < before;
  RETURN dropped;
END
$$;

-- ---------------------------------------------------------------- latency sketches

-- A mergeable quantile sketch of millisecond values (DDSketch, Masson et al.,
-- "DDSketch: a fast and fully-mergeable quantile sketch with
-- relative-error guarantees", VLDB 2019), relative accuracy 2%:
-- gamma = 1.02 / 0.98. Stored as a jsonb object {"<bucket>": count}.
-- Bucket 0 holds values below 1 ms (estimated as 0); bucket i >= 1 holds
-- (gamma^(i-2), gamma^(i-1)], estimated as 2 gamma^(i-1) / (gamma + 1),
-- within 2% of every value in it.
CREATE FUNCTION tollgate_sketch_index(ms bigint) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN ms IS NULL THEN NULL
              WHEN ms < 1 THEN 0
              ELSE ceil(ln(ms::float8) / ln(1.02 / 0.98) - 1e-9)::int + 1 END
$$;

-- The sketch of the union of the values of a and b (bucket-wise sum); NULL
-- stands for the empty sketch. Walks only b's buckets (a's are looked up),
-- so merging a small sketch into a large one is cheap: the usage writer
-- merges each batch's sketch into the stored one.
CREATE FUNCTION tollgate_sketch_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE
    a || coalesce((SELECT jsonb_object_agg(key, value::bigint + coalesce((a ->> key)::bigint, 0))
                   FROM jsonb_each_text(b)), '{}'::jsonb)
  END
$$;

-- The sketch of the non-NULL values of an array (NULL when there are none):
-- one call per group, e.g. tollgate_sketch_of_all(array_agg(latency_ms)).
CREATE FUNCTION tollgate_sketch_of_all(ms bigint[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_object_agg(i, n) FROM
    (SELECT tollgate_sketch_index(v) AS i, count(*) AS n FROM unnest(ms) AS v WHERE v IS NOT NULL GROUP BY 1) x
$$;

-- Merge of many sketches, for ad-hoc queries such as
--   SELECT tollgate_sketch_quantile(tollgate_sketch_sum(latency_sketch), 0.99)
--   FROM usage_rollup_1d WHERE model = '...';
-- (StatsStore sums buckets with jsonb_each_text ... GROUP BY instead.)
CREATE AGGREGATE tollgate_sketch_sum(jsonb) (SFUNC = tollgate_sketch_merge, STYPE = jsonb);

-- The q-quantile (0 <= q <= 1) of a sketch in ms: the estimate of the
-- bucket holding the value of rank max(1, ceil(q n)); NULL when empty.
CREATE FUNCTION tollgate_sketch_quantile(s jsonb, q float8) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
  WITH b AS (SELECT key::int AS i, value::bigint AS n FROM jsonb_each_text(s)),
       t AS (SELECT sum(n) AS total FROM b),
       c AS (SELECT i, sum(n) OVER (ORDER BY i) AS cum FROM b)
  SELECT CASE WHEN c.i = 0 THEN 0::float8
              ELSE 2 * power(1.02 / 0.98, c.i - 1) / (1.02 / 0.98 + 1) END
  FROM c, t
  WHERE t.total > 0 AND c.cum >= greatest(1, ceil(q * t.total))
  ORDER BY c.i LIMIT 1
$$;

-- ---------------------------------------------------------------- rollups

-- One row per bucket and (model, provider, endpoint_id, account_id,
-- api_key_id, app); '' and 0 stand for "none". Token columns sum the calls
-- whose usage the provider reported (usage_estimated = false); the
-- estimated_* columns sum Tollgate's estimate for the calls it did not, so
-- "not reported" stays apart from zero (usage_reported_requests < requests).
CREATE TABLE usage_rollup_15m (
  bucket_start                timestamptz NOT NULL,  -- UTC quarter hour
  model                       text        NOT NULL,
  provider                    text        NOT NULL,
  endpoint_id                 text        NOT NULL,
  account_id                  bigint      NOT NULL,
  api_key_id                  bigint      NOT NULL,
  app                         text        NOT NULL,
  requests                    bigint      NOT NULL DEFAULT 0,
  errors                      bigint      NOT NULL DEFAULT 0,  -- status >= 400
  server_errors               bigint      NOT NULL DEFAULT 0,  -- status >= 500
  cancelled                   bigint      NOT NULL DEFAULT 0,
  usage_reported_requests     bigint      NOT NULL DEFAULT 0,
  prompt_tokens               bigint      NOT NULL DEFAULT 0,
  completion_tokens           bigint      NOT NULL DEFAULT 0,
  cached_tokens               bigint      NOT NULL DEFAULT 0,
  cache_write_tokens          bigint      NOT NULL DEFAULT 0,
  reasoning_tokens            bigint      NOT NULL DEFAULT 0,
  estimated_prompt_tokens     bigint      NOT NULL DEFAULT 0,
  estimated_completion_tokens bigint      NOT NULL DEFAULT 0,
  cost_nano_usd               bigint      NOT NULL DEFAULT 0,
  byok_requests               bigint      NOT NULL DEFAULT 0,
  provider_cost_nano_usd      bigint      NOT NULL DEFAULT 0,  -- BYOK: paid by the account at its provider
  latency_ms_sum              bigint      NOT NULL DEFAULT 0,
  latency_sketch              jsonb       NULL,
  ttft_requests               bigint      NOT NULL DEFAULT 0,  -- calls with a time to first token
  ttft_ms_sum                 bigint      NOT NULL DEFAULT 0,
  ttft_sketch                 jsonb       NULL,
  -- Throughput: completion tokens and generation time (latency - ttft) of
  -- reported calls with a ttft and latency > ttft; tokens/s =
  -- generation_tokens * 1000 / generation_ms.
  generation_tokens           bigint      NOT NULL DEFAULT 0,
  generation_ms               bigint      NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket_start, model, provider, endpoint_id, account_id, api_key_id, app)
);
CREATE INDEX usage_rollup_15m_key_idx ON usage_rollup_15m (api_key_id, bucket_start);
CREATE INDEX usage_rollup_15m_account_idx ON usage_rollup_15m (account_id, bucket_start);

CREATE TABLE usage_rollup_1h (LIKE usage_rollup_15m INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE usage_rollup_1h ADD PRIMARY KEY (bucket_start, model, provider, endpoint_id, account_id, api_key_id, app);
CREATE INDEX usage_rollup_1h_key_idx ON usage_rollup_1h (api_key_id, bucket_start);
CREATE INDEX usage_rollup_1h_account_idx ON usage_rollup_1h (account_id, bucket_start);
COMMENT ON COLUMN usage_rollup_1h.bucket_start IS 'UTC hour, :00';

CREATE TABLE usage_rollup_1d (LIKE usage_rollup_15m INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE usage_rollup_1d ADD PRIMARY KEY (bucket_start, model, provider, endpoint_id, account_id, api_key_id, app);
CREATE INDEX usage_rollup_1d_key_idx ON usage_rollup_1d (api_key_id, bucket_start);
CREATE INDEX usage_rollup_1d_account_idx ON usage_rollup_1d (account_id, bucket_start);
COMMENT ON COLUMN usage_rollup_1d.bucket_start IS 'UTC day, 00:00';

-- Apps seen in usage rows (OpenRouter app attribution).
CREATE TABLE apps (
  app         text        PRIMARY KEY,  -- usage_events.app
  title       text        NULL,         -- the latest X-Title sent with it
  first_seen  timestamptz NOT NULL,
  last_seen   timestamptz NOT NULL
);

-- Adds usage rows to the three rollups and the apps table. The usage writer calls
-- it on the rows its INSERT returned (only rows actually inserted, so a
-- replay adds nothing); the backfill below calls it on the rows of 001-005.
-- Rows are grouped and upserted in key order, so concurrent writers lock
-- rollup rows in one order.
CREATE FUNCTION tollgate_rollup_usage(p_rows usage_events[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  spec record;
BEGIN
  FOR spec IN SELECT * FROM (VALUES ('usage_rollup_15m', 'quarter'), ('usage_rollup_1h', 'hour'),
                                     ('usage_rollup_1d', 'day')) AS s(tbl, grain) LOOP
    EXECUTE format($q$
      INSERT INTO %I AS t (bucket_start, model, provider, endpoint_id, account_id, api_key_id, app,
        requests, errors, server_errors, cancelled, usage_reported_requests,
        prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
        estimated_prompt_tokens, estimated_completion_tokens, cost_nano_usd, byok_requests,
        provider_cost_nano_usd, latency_ms_sum, latency_sketch, ttft_requests, ttft_ms_sum, ttft_sketch,
        generation_tokens, generation_ms)
      SELECT b, r.model, r.provider, coalesce(r.endpoint_id, ''), coalesce(r.account_id, 0),
        coalesce(r.api_key_id, 0), coalesce(r.app, ''),
        count(*), count(*) FILTER (WHERE r.status >= 400), count(*) FILTER (WHERE r.status >= 500),
        count(*) FILTER (WHERE r.cancelled), count(*) FILTER (WHERE NOT r.usage_estimated),
        coalesce(sum(r.prompt_tokens) FILTER (WHERE NOT r.usage_estimated), 0),
        coalesce(sum(r.completion_tokens) FILTER (WHERE NOT r.usage_estimated), 0),
        coalesce(sum(r.cached_tokens) FILTER (WHERE NOT r.usage_estimated), 0),
        coalesce(sum(r.cache_write_tokens) FILTER (WHERE NOT r.usage_estimated), 0),
        coalesce(sum(r.reasoning_tokens) FILTER (WHERE NOT r.usage_estimated), 0),
        coalesce(sum(r.prompt_tokens) FILTER (WHERE r.usage_estimated), 0),
        coalesce(sum(r.completion_tokens) FILTER (WHERE r.usage_estimated), 0),
        sum(r.cost_nano_usd), count(*) FILTER (WHERE r.byok),
        coalesce(sum(r.provider_cost_nano_usd) FILTER (WHERE r.byok), 0),
        sum(r.latency_ms), tollgate_sketch_of_all(array_agg(r.latency_ms)),
        count(r.ttft_ms), coalesce(sum(r.ttft_ms), 0), tollgate_sketch_of_all(array_agg(r.ttft_ms)),
        coalesce(sum(r.completion_tokens) FILTER (WHERE g), 0),
        coalesce(sum(r.latency_ms - r.ttft_ms) FILTER (WHERE g), 0)
      FROM unnest($1) AS r
      CROSS JOIN LATERAL (SELECT
        CASE WHEN %L = 'quarter' THEN date_bin('15 minutes', r.created_at, 'epoch'::timestamptz)
             WHEN %L = 'hour' THEN date_bin('1 hour', r.created_at, 'epoch'::timestamptz)
             ELSE date_trunc('day', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' END AS b,
        (NOT r.usage_estimated AND r.ttft_ms IS NOT NULL AND r.latency_ms > r.ttft_ms) AS g) x
      GROUP BY 1, 2, 3, 4, 5, 6, 7
      ORDER BY 1, 2, 3, 4, 5, 6, 7
      ON CONFLICT (bucket_start, model, provider, endpoint_id, account_id, api_key_id, app) DO UPDATE SET
        requests = t.requests + EXCLUDED.requests,
        errors = t.errors + EXCLUDED.errors,
        server_errors = t.server_errors + EXCLUDED.server_errors,
        cancelled = t.cancelled + EXCLUDED.cancelled,
        usage_reported_requests = t.usage_reported_requests + EXCLUDED.usage_reported_requests,
        prompt_tokens = t.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = t.completion_tokens + EXCLUDED.completion_tokens,
        cached_tokens = t.cached_tokens + EXCLUDED.cached_tokens,
        cache_write_tokens = t.cache_write_tokens + EXCLUDED.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + EXCLUDED.reasoning_tokens,
        estimated_prompt_tokens = t.estimated_prompt_tokens + EXCLUDED.estimated_prompt_tokens,
        estimated_completion_tokens = t.estimated_completion_tokens + EXCLUDED.estimated_completion_tokens,
        cost_nano_usd = t.cost_nano_usd + EXCLUDED.cost_nano_usd,
        byok_requests = t.byok_requests + EXCLUDED.byok_requests,
        provider_cost_nano_usd = t.provider_cost_nano_usd + EXCLUDED.provider_cost_nano_usd,
        latency_ms_sum = t.latency_ms_sum + EXCLUDED.latency_ms_sum,
        latency_sketch = tollgate_sketch_merge(t.latency_sketch, EXCLUDED.latency_sketch),
        ttft_requests = t.ttft_requests + EXCLUDED.ttft_requests,
        ttft_ms_sum = t.ttft_ms_sum + EXCLUDED.ttft_ms_sum,
        ttft_sketch = tollgate_sketch_merge(t.ttft_sketch, EXCLUDED.ttft_sketch),
        generation_tokens = t.generation_tokens + EXCLUDED.generation_tokens,
        generation_ms = t.generation_ms + EXCLUDED.generation_ms
    $q$, spec.tbl, spec.grain, spec.grain) USING p_rows;
  END LOOP;

  INSERT INTO apps AS a (app, title, first_seen, last_seen)
  SELECT r.app, (array_agg(r.app_title ORDER BY r.created_at DESC) FILTER (WHERE r.app_title IS NOT NULL))[1],
         min(r.created_at), max(r.created_at)
  FROM unnest(p_rows) AS r WHERE r.app IS NOT NULL
  GROUP BY r.app ORDER BY r.app
  ON CONFLICT (app) DO UPDATE SET
    title = CASE WHEN EXCLUDED.last_seen >= a.last_seen THEN coalesce(EXCLUDED.title, a.title) ELSE a.title END,
    first_seen = least(a.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(a.last_seen, EXCLUDED.last_seen);

  RETURN cardinality(p_rows);
END
$$;

-- ---------------------------------------------------------------- move the rows of 001-005

DO $$
DECLARE
  lo date;
  hi date;
BEGIN
  SELECT min((created_at AT TIME ZONE 'UTC')::date), max((created_at AT TIME ZONE 'UTC')::date)
    INTO lo, hi FROM usage_events_unpartitioned;
  IF lo IS NOT NULL THEN
    PERFORM tollgate_ensure_usage_partitions(lo, hi);
  END IF;
  PERFORM tollgate_ensure_usage_partitions((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7);
END
$$;

INSERT INTO usage_events SELECT u.*, NULL, NULL FROM usage_events_unpartitioned u;
INSERT INTO usage_request_ids SELECT request_id, created_at FROM usage_events_unpartitioned;
SELECT tollgate_rollup_usage(array_agg(u)) FROM usage_events u HAVING count(*) > 0;
DROP TABLE usage_events_unpartitioned;
