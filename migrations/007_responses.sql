-- 007_responses: stored responses of the OpenAI Responses API
-- (POST /v1/responses with store: true; billing/include/tollgate/billing/response_store.hpp).
--
-- One row per stored response, scoped to the key that created it: reads,
-- deletes and previous_response_id only see the calling key's rows. A row
-- holds everything a later call needs to continue the conversation (context),
-- so continuing never joins other rows.
--
-- The JSON columns are `json`, not `jsonb`: the gateway never queries inside
-- them, and `json` keeps the text exactly as written (key order, numbers) and
-- accepts the escape \u0000, which a model's output may contain and `jsonb`
-- refuses. The store refuses values over its size limit (16 MiB each) before
-- they reach the database.
--
-- Expired rows (expires_at <= now) are never returned by the store, and the
-- hourly usage maintenance deletes them (UsageMaintenance::Run).

CREATE TABLE responses (
  id          text        PRIMARY KEY CHECK (id <> ''),   -- "resp_" + 32 base62
  -- The gateway's request id of the call that produced it ("gen-..."): the
  -- usage row's request_id (no foreign key: usage rows are partitioned and
  -- dropped by retention independently of responses).
  request_id  text        NOT NULL,
  -- Keys are revoked, not deleted; should one be deleted, its responses go with it.
  api_key_id  bigint      NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
  account_id  bigint      NOT NULL,                        -- the key's account when stored
  model       text        NOT NULL,                        -- model slug as requested
  created_at  timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  -- The response object as the client sees it (GET /v1/responses/{id}).
  response    json        NOT NULL CHECK (json_typeof(response) = 'object'),
  -- Items of the conversation so far, full fidelity: the previous response's
  -- context, this call's input items, then its output items as stored
  -- (encrypted reasoning included).
  context     json        NOT NULL CHECK (json_typeof(context) = 'array')
);

-- Pruning: DELETE ... WHERE expires_at <= now.
CREATE INDEX responses_expires_idx ON responses (expires_at);
-- Deleting a key: the ON DELETE CASCADE finds its rows without a scan.
CREATE INDEX responses_api_key_idx ON responses (api_key_id);
